"""The verification cache: key hash -> what verification needs to know about the key.

Invariant: once a key's change (revocation) has committed and been announced, no entry read from
the database before that change may be served. Every invalidation bumps ``generation``; a lookup
that started in an older generation does not fill the cache, so a slow read that raced a
revocation cannot put the revoked key back as valid.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from limits import RateLimitItem

from app.auth.network import IPNetwork, parse_network
from app.auth.principal import Caller
from app.keys.credits import CreditTerms
from app.kit.ratelimit import Budget
from app.models.keys import ApiKey


@dataclass(frozen=True, slots=True)
class Replacement:
    """The key that replaced a superseded one: what its holder needs to find it."""

    id: str
    name: str
    hint: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    organization_id: str
    name: str
    hint: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit: Budget
    # expires_at as a Unix timestamp: the hot path compares floats, not datetimes.
    expires_ts: float | None
    # Replaced by a newer key: valid (deprecated) until superseded_at, then refused.
    superseded_at: datetime | None = None
    superseded_ts: float | None = None
    replaced_by: Replacement | None = None
    # Paused by its organization: refused as DISABLED.
    enabled: bool = True
    # The provider's metadata, parsed once; and as forward auth's X-Api-Key-Meta header value.
    meta: dict[str, Any] | None = None
    meta_header: str | None = None
    # The networks the key may be used from, parsed once; None: anywhere.
    allowlist: tuple[IPNetwork, ...] | None = None
    # None: unlimited. What is left is asked of the ledger on each use (app/keys/credits.py).
    credits: CreditTerms | None = None
    # The key's organization was suspended by the operator when the key was loaded; a
    # suspension or resumption drops the organization's entries on every instance.
    organization_suspended: bool = False
    # The scopes in name order, as answers list them: sorted once, when the key is cached.
    sorted_scopes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sorted_scopes", tuple(sorted(self.scopes)))

    def caller(self) -> Caller:
        """Who a request authenticated with this key acts as."""
        return Caller(
            self.organization_id,
            self.scopes,
            self.id,
            self.hint,
            being_replaced=self.superseded_at is not None,
        )

    @classmethod
    def from_row(
        cls,
        row: ApiKey,
        rate_limit: RateLimitItem,
        replacement: ApiKey | None = None,
        *,
        organization_suspended: bool = False,
    ) -> KeyRecord:
        return cls(
            id=row.id,
            organization_id=row.organization_id,
            name=row.name,
            hint=row.hint,
            scopes=frozenset(row.scopes),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            rate_limit=Budget.of(rate_limit, row.id),
            expires_ts=None if row.expires_at is None else row.expires_at.timestamp(),
            superseded_at=row.superseded_at,
            superseded_ts=None if row.superseded_at is None else row.superseded_at.timestamp(),
            replaced_by=(
                None
                if replacement is None
                else Replacement(
                    replacement.id, replacement.name, replacement.hint, replacement.created_at
                )
            ),
            enabled=row.enabled,
            meta=None if row.meta is None else json.loads(row.meta),
            meta_header=None if row.meta is None else meta_header(row.meta),
            allowlist=(
                None
                if row.ip_allowlist is None
                else tuple(parse_network(entry) for entry in row.ip_allowlist.split())
            ),
            credits=CreditTerms.of(row),
            organization_suspended=organization_suspended,
        )


def meta_header(meta_json: str) -> str:
    """The metadata as one header value: its compact JSON, base64url-encoded (with padding)."""
    return base64.urlsafe_b64encode(meta_json.encode()).decode("ascii")


class KeyCache:
    def __init__(
        self, *, max_entries: int, negative_ttl_seconds: float, negative_max_entries: int
    ) -> None:
        self._entries: dict[str, tuple[float, KeyRecord]] = {}
        self._hash_by_id: dict[str, str] = {}
        # Hashes of well-formed keys the database does not know, so that replaying one random
        # key does not cost a query per request.
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._max_entries = max_entries
        self._negative_ttl = negative_ttl_seconds
        self._negative_max = negative_max_entries
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str, ttl_seconds: float) -> KeyRecord | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        loaded_at, record = entry
        if time.monotonic() - loaded_at > ttl_seconds:
            self._drop(key_hash)
            return None
        return record

    def put(self, key_hash: str, record: KeyRecord, generation: int) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self._max_entries:
            # Dicts keep insertion order: the first entry is the oldest load.
            self._drop(next(iter(self._entries)))
        self._entries[key_hash] = (time.monotonic(), record)
        self._hash_by_id[record.id] = key_hash

    def is_known_unknown(self, key_hash: str) -> bool:
        expires = self._unknown.get(key_hash)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._unknown[key_hash]
            return False
        return True

    def remember_unknown(self, key_hash: str, generation: int) -> None:
        if generation != self.generation or self._negative_ttl <= 0:
            return
        self._unknown[key_hash] = time.monotonic() + self._negative_ttl
        self._unknown.move_to_end(key_hash)
        while len(self._unknown) > self._negative_max:
            self._unknown.popitem(last=False)

    def invalidate_key(self, key_id: str) -> None:
        self.generation += 1
        key_hash = self._hash_by_id.pop(key_id, None)
        if key_hash is not None:
            self._entries.pop(key_hash, None)

    def invalidate_organization(self, organization_id: str) -> None:
        """Drop every entry of one organization (suspended or resumed). A scan of the cache:
        this happens on an operator's action, rarely, and keeps the hot path free of an index
        by organization."""
        self.generation += 1
        for key_hash, (_, record) in list(self._entries.items()):
            if record.organization_id == organization_id:
                self._drop(key_hash)

    def forget_unknown(self, key_hash: str) -> None:
        """A key with this hash now exists (it was just created)."""
        self._unknown.pop(key_hash, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._hash_by_id.clear()
        self._unknown.clear()

    def _drop(self, key_hash: str) -> None:
        entry = self._entries.pop(key_hash, None)
        if entry is not None:
            self._hash_by_id.pop(entry[1].id, None)
