"""Key verification: the one function that decides whether a presented key may be used.

GraphQL authentication, ``POST /v1/keys/verify``, ``GET /v1/auth`` and the in-process FastAPI
dependency all call :meth:`KeyVerifier.verify`. The order of the checks is the contract: each
refusal is the most useful one the request can get, and a request refused at one step spends
nothing at the later ones (no rate-limit budget, no credit).

1. format: choose the key the request presented, check its shape and checksum (no I/O);
2. known: hash it and look it up, cache first (no database round trip on a hit); a database
   that does not answer for a key not in the cache is UNAVAILABLE, never a guess;
3. the organization's standing: a suspended organization's keys are refused as
   ORGANIZATION_SUSPENDED, before anything about the key itself;
4. the key's own standing: REVOKED, then SUPERSEDED, EXPIRED, DISABLED (a key that is gone for
   good is told so before one that is only paused);
5. where from: IP_NOT_ALLOWED when the key has an allowlist and the caller's address is outside
   it (before scopes: a key used from the wrong network should not learn what it could do);
6. what for: INSUFFICIENT_SCOPE;
7. the rate limit: RATE_LIMITED spends the window's budget but no credit;
8. credits (data plane only): CREDITS_EXHAUSTED. Last, because a credit is what the provider
   sells: a request refused for any other reason never costs one. The budget a refused spend
   used comes back with the next window; the credit would not;
9. note the use in memory for the batched usage flush.

A cached key is verified without a database round trip, credits aside: a key with credits
spends them in Redis when configured, else in the database (app/keys/credits.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from limits import RateLimitItem
from sqlalchemy import exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.network import IPAddress, is_within
from app.auth.outcomes import Outcome, Rejection
from app.auth.presentation import Presentation, choose_key
from app.auth.secret import hash_secret
from app.config import Settings
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.cache import KeyCache, KeyRecord
from app.keys.credits import CreditLedger, CreditSpend
from app.keys.scopes import ScopeCatalogue
from app.kit.db import SessionMaker, outages_as_unavailable
from app.kit.errors import Unavailable
from app.kit.ratelimit import RateLimiter, RateLimitStatus, rate_limit_item
from app.kit.ratelimit import status_of as rate_limit_status
from app.kit.timeutil import utcnow
from app.metrics import (
    KEY_CACHE_HITS,
    KEY_CACHE_MISSES,
    KEY_DATABASE_LOOKUPS,
    VERIFICATIONS,
)
from app.models.keys import ApiKey, KeySupersession
from app.models.organizations import Organization

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)


class UseRecorder(Protocol):
    """Where verification counts each use of a known key (the usage feature's recorder, wired
    in by the runtime): verification never waits on it and never does I/O through it."""

    def record(
        self, key_id: str, organization_id: str, operation: str, outcome: Outcome, at: float
    ) -> None: ...


class Verification(NamedTuple):
    outcome: Outcome
    message: str
    hint: str
    # The key the request presented, once recognised (also when refused as revoked, expired...).
    key: KeyRecord | None = None
    ratelimit: RateLimitStatus | None = None
    # For a key with credits, once they were asked about: what is left, when the next refill is.
    credits: CreditSpend | None = None

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID

    @property
    def sunset(self) -> datetime | None:
        """For a valid key in its grace period after being replaced: when it stops working."""
        key = self.key
        return key.superseded_at if self.valid and key is not None else None

    @property
    def expires_soon(self) -> bool:
        """A valid key expiring within a week: every answer says so (as GitHub does)."""
        key = self.key
        return (
            self.valid
            and key is not None
            and key.expires_ts is not None
            and key.expires_ts - time.time() <= EXPIRY_NOTICE_SECONDS
        )

    def status_headers(self) -> dict[str, str]:
        """The key's rate-limit status (with ``Retry-After`` once it is spent), or, when the key
        could not be checked, when to retry."""
        if self.outcome is Outcome.UNAVAILABLE:
            return {"Retry-After": str(Unavailable.retry_after_seconds)}
        return {} if self.ratelimit is None else self.ratelimit.headers()

    def notice_headers(self) -> dict[str, str]:
        """Deprecation (RFC 9745) and Sunset (RFC 8594) for a replaced key still in its grace
        period; the expiry for a key that expires within a week."""
        headers: dict[str, str] = {}
        key = self.key
        if key is None or not self.valid:
            return headers
        if key.superseded_at is not None:
            since = key.replaced_by.created_at if key.replaced_by else key.superseded_at
            headers["Deprecation"] = f"@{int(since.timestamp())}"
            headers["Sunset"] = format_datetime(key.superseded_at, usegmt=True)
        if self.expires_soon and key.expires_at is not None:
            headers["X-Api-Key-Expires-At"] = _when(key.expires_at)
        return headers


EXPIRY_NOTICE_SECONDS = 7 * 86400
VERIFICATION_SPAN = "keyhouse.verify_key"
# One counter child per outcome, made once: the hot path increments without a label lookup.
_OUTCOMES = {outcome: VERIFICATIONS.labels(outcome.value) for outcome in Outcome}


def _span_attributes(verification: Verification) -> dict[str, str | bool]:
    """What a trace tells of a verification: its outcome (VALID, or the reason for a refusal)
    and whose key it was; never the key, its hint, or anything else the request sent."""
    attributes: dict[str, str | bool] = {
        "keyhouse.verification.valid": verification.valid,
        "keyhouse.verification.outcome": verification.outcome.value,
    }
    key = verification.key
    if key is not None:
        attributes["keyhouse.organization.id"] = key.organization_id
        attributes["keyhouse.key.id"] = key.id
    return attributes


def _window(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    if seconds % 60 == 0:
        minutes = seconds // 60
        return "minute" if minutes == 1 else f"{minutes} minutes"
    return "second" if seconds == 1 else f"{seconds} seconds"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyVerifier:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: SessionMaker,
        cache: KeyCache,
        broadcast: KeyChangeBroadcast,
        limiter: RateLimiter,
        recorder: UseRecorder,
        catalogue: ScopeCatalogue,
        ledger: CreditLedger,
    ) -> None:
        self._prefix = settings.key_prefix
        self._sessionmaker = sessionmaker
        self._cache = cache
        self._broadcast = broadcast
        self._limiter = limiter
        self._recorder = recorder
        self._catalogue = catalogue
        self._ledger = ledger
        self._ttl_live = settings.cache_ttl_seconds
        self._ttl_fallback = settings.cache_ttl_without_broadcast_seconds
        self._default_limit = rate_limit_item(
            settings.default_rate_limit_requests, settings.default_rate_limit_per_seconds
        )
        self._lookup_slots = asyncio.Semaphore(settings.max_concurrent_key_lookups)

    async def verify(
        self,
        presentation: Presentation,
        *,
        required_scopes: Collection[str] = (),
        operation: str = "",
        defer_valid_use: bool = False,
        client: IPAddress | None = None,
        cost: int | None = None,
    ) -> Verification:
        """``operation`` labels the use in usage. With ``defer_valid_use``, a valid use is not
        recorded here: the caller learns its label later and calls :meth:`record_valid_use`
        (GraphQL, whose operation is known only once its document is parsed and validated).
        Refusals are always recorded here, under ``operation``. ``client``: the caller's
        address (for a key with an allowlist; None when unknown). ``cost``: the credits the use
        spends; None for a use that is not metered (keyhouse's own control plane)."""
        chosen = choose_key(presentation, self._prefix)
        if isinstance(chosen, Rejection):
            return self._refuse(operation, chosen.outcome, chosen.message, chosen.hint)
        record = await self._known(hash_secret(chosen))
        if not isinstance(record, KeyRecord):
            return self._refuse(operation, record.outcome, record.message, record.hint)
        if record.organization_suspended:
            return self._refuse(
                operation,
                Outcome.ORGANIZATION_SUSPENDED,
                "This API key's organization is suspended.",
                "Every key of the organization is refused until the provider resumes it; "
                "contact the provider of this API.",
                record,
            )
        now = time.time()
        refusal = self._standing(record, now) or self._place_and_purpose(
            record, client, required_scopes
        )
        if refusal is not None:
            return self._refuse(operation, refusal.outcome, refusal.message, refusal.hint, record)

        try:
            ratelimit, spend = await self._spend(record, cost)
        except Unavailable as outage:
            return self._unavailable(operation, outage)
        if not ratelimit.allowed:
            return self._refuse(
                operation,
                Outcome.RATE_LIMITED,
                f"This API key exceeded its rate limit of {ratelimit.limit} requests per "
                f"{_window(record.rate_limit.item.get_expiry())}.",
                f"Retry after {ratelimit.retry_after} seconds.",
                record,
                ratelimit,
            )
        if spend is not None and not spend.spent:
            return self._exhausted(operation, record, ratelimit, spend, cost or 0)

        _OUTCOMES[Outcome.VALID].inc()
        if not defer_valid_use:
            self.record_valid_use(record, operation, now)
        return Verification(
            outcome=Outcome.VALID,
            message="The API key is valid.",
            hint="",
            key=record,
            ratelimit=ratelimit,
            credits=spend,
        )

    async def _known(self, key_hash: str) -> KeyRecord | Rejection:
        """The key's record, from the cache or the database; UNKNOWN or UNAVAILABLE."""
        ttl = self._ttl_live if self._broadcast.live else self._ttl_fallback
        record = self._cache.get(key_hash, ttl)
        if record is not None:
            KEY_CACHE_HITS.inc()
            return record
        KEY_CACHE_MISSES.inc()
        try:
            record = await self._load(key_hash, ttl)
        except Unavailable as outage:
            # The cause (a refused connection, a connection lost mid-statement) is logged here
            # once per lookup, without the request; the caller is told only that it may retry.
            logger.warning("key lookup failed, database unavailable: %r", outage.__cause__)
            return Rejection(
                Outcome.UNAVAILABLE,
                "The API key could not be checked: the database is unavailable.",
                f"Retry in {Unavailable.retry_after_seconds} seconds.",
            )
        if record is None:
            return Rejection(
                Outcome.UNKNOWN,
                "This API key does not exist.",
                "Check that you copied the whole key; if it was deleted or never issued, "
                "create a new one.",
            )
        return record

    def _standing(self, record: KeyRecord, now: float) -> Rejection | None:
        """Why the key itself may not be used now: revoked, replaced, expired, paused, in that
        order; None when it may."""
        if record.revoked_at is not None:
            return Rejection(
                Outcome.REVOKED,
                f"This API key was revoked at {_when(record.revoked_at)}.",
                "Revocation is permanent; create a new key and update your integration.",
            )
        if record.superseded_ts is not None and now >= record.superseded_ts:
            assert record.superseded_at is not None
            replaced = record.replaced_by
            by = "a newer key" if replaced is None else f"key '{replaced.name}' ({replaced.hint})"
            return Rejection(
                Outcome.SUPERSEDED,
                f"This API key was replaced by {by} at {_when(record.superseded_at)}.",
                "Use the organization's current key: the dashboard lists each key's hint and "
                "status, so you can tell which one your integration should hold.",
            )
        if record.expires_ts is not None and now >= record.expires_ts:
            assert record.expires_at is not None
            return Rejection(
                Outcome.EXPIRED,
                f"This API key expired at {_when(record.expires_at)}.",
                "Create a new key (or rotate this one) and update your integration.",
            )
        if not record.enabled:
            return Rejection(
                Outcome.DISABLED,
                "This API key is disabled.",
                "An administrator of the organization that issued it paused it; ask them to "
                "enable it again. It keeps its name, scopes and history meanwhile.",
            )
        return None

    def _place_and_purpose(
        self, record: KeyRecord, client: IPAddress | None, required_scopes: Collection[str]
    ) -> Rejection | None:
        """Whether the key may be used from where the request came from, then for what it asks."""
        allowlist = record.allowlist
        if allowlist is not None and (client is None or not is_within(client, allowlist)):
            # The hint names the address seen, never the list: that belongs to the organization.
            seen = "an unknown address" if client is None else str(client)
            return Rejection(
                Outcome.IP_NOT_ALLOWED,
                f"This API key may not be used from {seen}.",
                "The key's organization limits the networks it may be used from; ask them to "
                "allow this address, or call from an allowed network."
                + (
                    ' A service verifying the key sends its caller\'s address as "ip".'
                    if client is None
                    else ""
                ),
            )
        if required_scopes and not record.scopes.issuperset(required_scopes):
            return Rejection(
                Outcome.INSUFFICIENT_SCOPE,
                self._describe_missing_scopes(required_scopes, record.scopes),
                "Create a key that holds the scope this request needs.",
            )
        return None

    async def _spend(
        self, record: KeyRecord, cost: int | None
    ) -> tuple[RateLimitStatus, CreditSpend | None]:
        """The rate limit, then the credits, spent only if the rate limit allowed the use. With
        Redis both are one round trip; without it, credits are spent in the database. Raises
        Unavailable when the credits cannot be spent."""
        terms = record.credits
        if cost is None or terms is None:
            return await self._limiter.hit(record.rate_limit), None
        budget = record.rate_limit
        counter = self._limiter.shared_counter(budget)
        if counter is not None:
            hit = await self._ledger.hit_and_spend(
                counter, budget.item, record.id, terms, cost, utcnow()
            )
            return rate_limit_status(budget.item, hit.hits, hit.reset), hit.spend
        ratelimit = await self._limiter.hit(budget)
        if not ratelimit.allowed:
            return ratelimit, None
        return ratelimit, await self._ledger.spend(record.id, terms, cost, utcnow())

    def _exhausted(
        self,
        operation: str,
        record: KeyRecord,
        ratelimit: RateLimitStatus,
        spend: CreditSpend,
        cost: int,
    ) -> Verification:
        left = "no credits left" if spend.remaining == 0 else f"{spend.remaining} credits left"
        wanted = "" if cost <= 1 else f", and this request costs {cost}"
        refill = (
            "Its credits are not refilled: ask the organization that issued it for more."
            if spend.refill_at is None
            else f"Its credits are refilled at {_when(spend.refill_at)}."
        )
        refused = self._refuse(
            operation,
            Outcome.CREDITS_EXHAUSTED,
            f"This API key has {left}{wanted}.",
            refill,
            record,
            ratelimit,
        )
        return refused._replace(credits=spend)

    def record_valid_use(self, key: KeyRecord, operation: str, at: float | None = None) -> None:
        self._recorder.record(
            key.id, key.organization_id, operation, Outcome.VALID, time.time() if at is None else at
        )

    def _refuse(
        self,
        operation: str,
        outcome: Outcome,
        message: str,
        hint: str,
        record: KeyRecord | None = None,
        ratelimit: RateLimitStatus | None = None,
    ) -> Verification:
        _OUTCOMES[outcome].inc()
        if record is not None:
            # A refused use of a known key is part of its organization's usage: integrations
            # still calling with revoked or replaced keys are what its operators look for.
            self._recorder.record(
                record.id, record.organization_id, operation, outcome, time.time()
            )
        return Verification(
            outcome=outcome, message=message, hint=hint, key=record, ratelimit=ratelimit
        )

    def _unavailable(self, operation: str, outage: Unavailable) -> Verification:
        """The credit store did not answer: a key with credits cannot be checked."""
        logger.warning("credit spend failed, store unavailable: %r", outage.__cause__)
        return self._refuse(
            operation,
            Outcome.UNAVAILABLE,
            "The API key's credits could not be checked: the credit store is unavailable.",
            f"Retry in {Unavailable.retry_after_seconds} seconds.",
        )

    def _describe_missing_scopes(self, required: Collection[str], held: frozenset[str]) -> str:
        missing = sorted(set(required) - held)
        unknown = set(self._catalogue.unknown(missing))
        described = ", ".join(
            f"'{name}' (not a known scope)" if name in unknown else f"'{name}'" for name in missing
        )
        return f"This API key lacks the scope(s) {described}."

    async def _load(self, key_hash: str, ttl: float) -> KeyRecord | None:
        if self._cache.is_known_unknown(key_hash):
            return None
        generation = self._cache.generation
        async with self._lookup_slots:
            # While we queued, another request may have loaded the same key.
            cached = self._cache.get(key_hash, ttl)
            if cached is not None:
                return cached
            with outages_as_unavailable():
                row, replacement, suspended, superseded_at = await self._read(key_hash)
        if row is None:
            self._cache.remember_unknown(key_hash, generation)
            return None
        record = KeyRecord.from_row(
            row, self.rate_limit_for(row), replacement, organization_suspended=suspended
        )
        if superseded_at is not None:
            record = replace(
                record, superseded_at=superseded_at, superseded_ts=superseded_at.timestamp()
            )
        self._cache.put(key_hash, record, generation)
        return record

    async def _read(
        self, key_hash: str
    ) -> tuple[ApiKey | None, ApiKey | None, bool, datetime | None]:
        """The key's row, for a superseded key its replacement's, whether the key's organization
        is suspended (read in the same statement), and when a supersession whose batches have not
        reached the key yet replaces it (None when none does)."""
        KEY_DATABASE_LOOKUPS.inc()
        pending = exists().where(
            col(KeySupersession.organization_id) == col(ApiKey.organization_id)
        )
        async with self._sessionmaker() as session:
            found = (
                await session.exec(
                    select(ApiKey, col(Organization.suspended_at), pending)
                    .join(Organization, col(Organization.id) == col(ApiKey.organization_id))
                    .where(col(ApiKey.key_hash) == key_hash)
                )
            ).first()
            if found is None:
                return None, None, False, None
            row, suspended_at, supersessions = found
            covering = None
            if supersessions and row.superseded_at is None:
                covering = await _covering_supersession(session, row)
            replaced_by = (
                row.superseded_by_key_id if covering is None else covering.replacement_key_id
            )
            # A superseded key's refusal names its replacement (one more query, only then).
            replacement = None if replaced_by is None else await session.get(ApiKey, replaced_by)
        superseded_at = None if covering is None else covering.effective_at
        return row, replacement, suspended_at is not None, superseded_at

    def rate_limit_for(self, row: ApiKey) -> RateLimitItem:
        if row.rate_limit_requests is None or row.rate_limit_per_seconds is None:
            return self._default_limit
        return rate_limit_item(row.rate_limit_requests, row.rate_limit_per_seconds)


class TracedKeyVerifier(KeyVerifier):
    """The same verification, each one a span, its lookup's statements the span's children
    (KEYHOUSE_OTEL_ENDPOINT). Without tracing the runtime uses KeyVerifier itself: nothing is
    added to a verification then, not even a check."""

    def __init__(self, *, tracer: Tracer, **parts: Any) -> None:
        super().__init__(**parts)
        self._tracer = tracer

    async def verify(
        self,
        presentation: Presentation,
        *,
        required_scopes: Collection[str] = (),
        operation: str = "",
        defer_valid_use: bool = False,
        client: IPAddress | None = None,
        cost: int | None = None,
    ) -> Verification:
        with self._tracer.start_as_current_span(VERIFICATION_SPAN, record_exception=False) as span:
            verified = await super().verify(
                presentation,
                required_scopes=required_scopes,
                operation=operation,
                defer_valid_use=defer_valid_use,
                client=client,
                cost=cost,
            )
            span.set_attributes(_span_attributes(verified))
            return verified


async def _covering_supersession(session: AsyncSession, key: ApiKey) -> KeySupersession | None:
    """The first pending supersession of the key's organization that covers the key (one more
    query, only while the organization has one): the one its batches will mark it with."""
    statement = (
        select(KeySupersession)
        .where(
            col(KeySupersession.organization_id) == key.organization_id,
            col(KeySupersession.replaced_before) >= key.created_at,
        )
        .order_by(col(KeySupersession.replaced_before))
    )
    return next((s for s in (await session.exec(statement)).all() if s.covers(key)), None)
