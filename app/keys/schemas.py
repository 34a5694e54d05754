"""What key management takes and gives back: inputs, results and their bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.models.keys import ApiKey, KeyStatus, ListedKey, RefillInterval

NAME_MAX_LENGTH = 128

EXPIRES_IN_DAYS_MAX = 3650

RATE_LIMIT_REQUESTS_MAX = 1_000_000

RATE_LIMIT_WINDOW_MAX = 86_400  # a day


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    per_seconds: int

    def as_json(self) -> dict[str, int]:
        """As GraphQL names it (``perSeconds``): for audit details and request digests."""
        return {"requests": self.requests, "perSeconds": self.per_seconds}


META_MAX_BYTES = 4096
META_MAX_KEYS = 32
META_MAX_DEPTH = 3
IP_ALLOWLIST_MAX = 100
CREDITS_MAX = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Refill:
    amount: int
    interval: RefillInterval


@dataclass(frozen=True, slots=True)
class Credits:
    remaining: int
    refill: Refill | None = None

    def as_json(self) -> dict[str, Any]:
        """As GraphQL names it: for audit details and request digests."""
        refill = self.refill
        return {
            "remaining": self.remaining,
            "refill": None
            if refill is None
            else {"amount": refill.amount, "interval": refill.interval.value},
        }


class Unchanged(Enum):
    """An update's field that was not given: the key keeps what it has. (None clears it.)"""

    UNCHANGED = "UNCHANGED"


UNCHANGED = Unchanged.UNCHANGED


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    key_id: str
    name: str | Unchanged | None = UNCHANGED
    scopes: Sequence[str] | Unchanged | None = UNCHANGED
    # None: back to the deployment's default.
    rate_limit: RateLimit | Unchanged | None = UNCHANGED
    # A JSON value (checked to be an object); None clears it.
    meta: Any = UNCHANGED
    # None or empty: usable from anywhere.
    ip_allowlist: Sequence[str] | Unchanged | None = UNCHANGED
    # None: unlimited.
    credits: Credits | Unchanged | None = UNCHANGED
    enabled: bool | Unchanged | None = UNCHANGED


GRACE_HOURS_MAX = 720

# Rotating a key that never expires under a policy that requires expiry, with no upper bound
# set, gives the new key this lifetime.
ROTATION_DEFAULT_DAYS = 90


@dataclass(frozen=True, slots=True)
class KeyCreate:
    name: str
    scopes: Sequence[str]
    expires_in_days: int | None = None
    rate_limit: RateLimit | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class KeyCreated:
    api_key: ApiKey
    secret: str  # shown once, never stored (see idempotency.py for retries)
    superseded: Sequence[ApiKey] = ()


@dataclass(frozen=True, slots=True)
class KeyRotate:
    key_id: str
    grace_period_hours: int = 0
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRotated:
    api_key: ApiKey
    secret: str
    previous: ApiKey


@dataclass(frozen=True, slots=True)
class KeyFilter:
    status: KeyStatus | None = None
    scope: str | None = None
    # Active keys that expire within this many days (expiry notices).
    expiring_within_days: int | None = None


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[ListedKey]
    has_next_page: bool
    # Counted with the page when asked for (up to COUNT_LIMIT); None when not asked for.
    total_count: int | None = None


@dataclass(frozen=True, slots=True)
class KeyCounts:
    """Each figure up to COUNT_LIMIT (app/kit/pagination.py)."""

    total: int
    active: int
    revoked: int
    expired: int
    superseded: int
