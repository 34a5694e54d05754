"""What key management takes and gives back: inputs, results and their bounds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.models.keys import ApiKey, KeyStatus, ListedKey

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
