from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Column, Index, Text, text
from sqlalchemy import Integer as sa_Integer
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class KeyStatus(StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"
    # Paused by its organization (updateApiKey enabled: false) until it is enabled again.
    DISABLED = "DISABLED"


class RefillInterval(StrEnum):
    """How often a key's credits are reset to its refill amount, at the boundary in UTC."""

    DAILY = "DAILY"
    MONTHLY = "MONTHLY"


LIVE_NAME_CONDITION = "revoked_at IS NULL AND superseded_at IS NULL"
# The partial indexes of the status filters and counts: each holds only the keys its question
# can match, so a question about a few keys never walks the others.
REVOKED_CONDITION = "revoked_at IS NOT NULL"
EXPIRING_CONDITION = "revoked_at IS NULL AND expires_at IS NOT NULL"
SUPERSEDING_CONDITION = "revoked_at IS NULL AND superseded_at IS NOT NULL"


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"
    __table_args__ = (
        # Names are unique among an organization's keys that are still in play, compared as
        # name_key (NFKC and case folding: app/kit/boundary.py); a revoked or replaced key's name
        # can be reused (rotation gives the new key the old one's name). The partial index makes
        # this hold under concurrent creates too.
        Index(
            "uq_api_keys_live_name",
            "organization_id",
            "name_key",
            unique=True,
            sqlite_where=text(LIVE_NAME_CONDITION),
            postgresql_where=text(LIVE_NAME_CONDITION),
        ),
        Index("ix_api_keys_org_created", "organization_id", "created_at", "id"),
        Index(
            "ix_api_keys_org_revoked",
            "organization_id",
            "created_at",
            "id",
            sqlite_where=text(REVOKED_CONDITION),
            postgresql_where=text(REVOKED_CONDITION),
        ),
        # superseded_at too: the expiring filter's count (keys still in play that expire by a
        # horizon) is then read from this index alone, without a visit to each key's row.
        Index(
            "ix_api_keys_org_expires",
            "organization_id",
            "expires_at",
            "superseded_at",
            sqlite_where=text(EXPIRING_CONDITION),
            postgresql_where=text(EXPIRING_CONDITION),
        ),
        # The expiry notices' walk over every organization's keys, by expiry.
        Index(
            "ix_api_keys_expires",
            "expires_at",
            sqlite_where=text(EXPIRING_CONDITION),
            postgresql_where=text(EXPIRING_CONDITION),
        ),
        Index(
            "ix_api_keys_org_superseded",
            "organization_id",
            "superseded_at",
            sqlite_where=text(SUPERSEDING_CONDITION),
            postgresql_where=text(SUPERSEDING_CONDITION),
        ),
    )

    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", max_length=32)
    name: str = Field(max_length=128)
    # The name as names are compared (boundary.name_key): what the unique index holds.
    name_key: str = Field(max_length=600)
    # Space-separated, sorted: what a key's scopes read as. The scope filter reads api_key_scopes.
    scopes_text: str = Field(max_length=4000)
    # SHA-256 of the whole secret. Keys carry 190 random bits, so a fast hash is safe here and a
    # slow password hash would only cost the hot path.
    key_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The key that created this one; None when created from the CLI.
    created_by_key_id: str | None = Field(default=None, max_length=32)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The key's own rate limit (requests per window of seconds); None: the deployment default.
    rate_limit_requests: int | None = Field(default=None)
    rate_limit_per_seconds: int | None = Field(default=None)
    # Replaced by a newer key (rotation, or the single-active-key policy): valid until
    # superseded_at (the grace period), then refused as SUPERSEDED.
    superseded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    superseded_by_key_id: str | None = Field(default=None, max_length=32)
    # False: paused (refused as DISABLED) until enabled again; keeps its name, usage, last use.
    enabled: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=text("true"))
    )
    # The provider's own JSON object about the key (customer id, plan...), compact JSON text.
    meta: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The networks the key may be used from, space-separated CIDRs; None: from anywhere.
    ip_allowlist: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Credits (usage-limited keys); credits_remaining None: unlimited. With Redis the balance is
    # spent there and written back here in batches (app/keys/credits.py).
    credits_remaining: int | None = Field(default=None)
    credits_refill_amount: int | None = Field(default=None)
    credits_refill_interval: str | None = Field(default=None, max_length=16)
    # The refill period the balance belongs to ('2026-12-01' daily, '2026-12' monthly, '' for
    # no refill): a balance from an earlier period is reset to the refill amount when next used.
    credits_period: str | None = Field(default=None, max_length=16)
    # Bumped whenever an update sets the balance: a newer version replaces what Redis holds.
    credits_version: int = Field(
        default=0, sa_column=Column(sa_Integer, nullable=False, server_default=text("0"))
    )
    # When a secret scanner reported the key found in public (POST /v1/keys/leaked).
    leaked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def scopes(self) -> list[str]:
        return self.scopes_text.split()

    def status_at(self, now: datetime) -> KeyStatus:
        return key_status(self.revoked_at, self.superseded_at, self.expires_at, now, self.enabled)

    def public_fields(self, now: datetime) -> dict[str, object]:
        """What an event may tell about the key: never its secret or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "scopes": self.scopes,
            "status": self.status_at(now).value,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "revokedAt": self.revoked_at,
            "supersededAt": self.superseded_at,
            "supersededByKeyId": self.superseded_by_key_id,
            "leakedAt": self.leaked_at,
        }

    def scope_rows(self) -> list[ApiKeyScope]:
        return [
            ApiKeyScope(
                api_key_id=self.id,
                scope=scope,
                organization_id=self.organization_id,
                created_at=self.created_at,
            )
            for scope in sorted(set(self.scopes))
        ]


class ApiKeyScope(SQLModel, table=True):
    """One scope a key holds, a row each, so that "the keys holding read:billing" is an index
    walk. An update that changes a key's scopes replaces its rows. The key's organization and
    creation time are copied here so that one index serves the filter in the keys page's order
    (newest first)."""

    __tablename__ = "api_key_scopes"
    __table_args__ = (
        Index("ix_api_key_scopes_listing", "organization_id", "scope", "created_at", "api_key_id"),
    )

    api_key_id: str = Field(foreign_key="api_keys.id", primary_key=True, max_length=32)
    scope: str = Field(primary_key=True, max_length=200)
    organization_id: str = Field(max_length=32)
    created_at: datetime = Field(sa_type=UTCDateTime)


class KeySupersession(SQLModel, table=True):
    """A single-active-key supersession whose keys are not all marked yet.

    Marking a million keys (and writing each one's events) takes a minute; a creation marks the
    first batch itself and leaves the rest here, for batches of their own transactions
    (app/keys/supersession.py). Until its last batch, verification treats every key it covers as
    already marked (``covers``), so the change holds from the next request on every instance.
    """

    __tablename__ = "key_supersessions"
    __table_args__ = (Index("ix_key_supersessions_org", "organization_id", "replaced_before"),)

    replacement_key_id: str = Field(primary_key=True, max_length=32)
    organization_id: str = Field(max_length=32)
    # The keys created up to this moment (the replacement's creation) are replaced, as they
    # stood then: active, not yet replaced, other than the replacement and ``kept_key_id``.
    replaced_before: datetime = Field(sa_type=UTCDateTime)
    # Their superseded_at: when they stop working (after the policy's grace period).
    effective_at: datetime = Field(sa_type=UTCDateTime)
    # The caller's own key, never replaced by its own creation.
    kept_key_id: str | None = Field(default=None, max_length=32)
    # Who made the change, for the audit events each batch writes.
    actor_key_id: str | None = Field(default=None, max_length=32)
    actor_hint: str | None = Field(default=None, max_length=40)
    # How far the batches got, in the keys' creation order: the next batch starts after this.
    done_created_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    done_key_id: str | None = Field(default=None, max_length=32)

    def covers(self, key: ApiKey) -> bool:
        """Whether this supersession replaces ``key`` (whose row is not marked yet)."""
        return (
            key.organization_id == self.organization_id
            and key.id not in (self.replacement_key_id, self.kept_key_id)
            and key.created_at <= self.replaced_before
            and key.revoked_at is None
            and key.superseded_at is None
            and (key.expires_at is None or key.expires_at > self.replaced_before)
            and key.enabled
        )


def key_status(
    revoked_at: datetime | None,
    superseded_at: datetime | None,
    expires_at: datetime | None,
    now: datetime,
    enabled: bool = True,
) -> KeyStatus:
    """A key's status at ``now``: revoked, then superseded, then expired, then disabled (the
    order verification refuses them in)."""
    if revoked_at is not None:
        return KeyStatus.REVOKED
    if superseded_at is not None and superseded_at <= now:
        return KeyStatus.SUPERSEDED
    if expires_at is not None and expires_at <= now:
        return KeyStatus.EXPIRED
    if not enabled:
        return KeyStatus.DISABLED
    return KeyStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class ListedKey:
    """A key as a list shows it: plain values read without the ORM (the keys page reads 50 of
    them on every dashboard view, and ORM objects cost several times more), and without its hash.
    The fields are named as ``ApiKey``'s columns, in the order they are selected."""

    id: str
    organization_id: str
    name: str
    scopes_text: str
    hint: str
    created_at: datetime
    created_by_key_id: str | None
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_requests: int | None
    rate_limit_per_seconds: int | None
    superseded_at: datetime | None
    superseded_by_key_id: str | None
    enabled: bool
    meta: str | None
    ip_allowlist: str | None
    credits_remaining: int | None
    credits_refill_amount: int | None
    credits_refill_interval: str | None
    credits_period: str | None
    leaked_at: datetime | None

    @property
    def scopes(self) -> list[str]:
        return self.scopes_text.split()

    def status_at(self, now: datetime) -> KeyStatus:
        return key_status(self.revoked_at, self.superseded_at, self.expires_at, now, self.enabled)


class IdempotencyRecord(SQLModel, table=True):
    """The outcome of a createApiKey/rotateApiKey sent with an idempotency key (kept 24 hours).

    A client that retries after a timeout gets the same key back, secret included, instead of a
    second key. The secret is stored sealed under a key derived from the server secret and the
    idempotency key, which itself is stored only as a keyed digest (app/keys/idempotency.py).
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (Index("ix_idempotency_records_created", "created_at"),)

    organization_id: str = Field(primary_key=True, max_length=32)
    key_digest: str = Field(primary_key=True, max_length=64)
    operation: str = Field(max_length=32)
    request_digest: str = Field(max_length=64)
    api_key_id: str = Field(max_length=32)
    previous_api_key_id: str | None = Field(default=None, max_length=32)
    sealed_secret: str = Field(max_length=200)
    # Indexed for the purge of records past their retention.
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
