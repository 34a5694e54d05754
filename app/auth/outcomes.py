"""The one vocabulary of verification outcomes, shared by GraphQL, /v1/keys/verify, /v1/auth
and usage analytics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    VALID = "VALID"
    # Decided from the request alone, before any lookup.
    MISSING = "MISSING"
    MALFORMED = "MALFORMED"
    LOOKS_LIKE_JWT = "LOOKS_LIKE_JWT"
    PLACEHOLDER = "PLACEHOLDER"
    QUOTED = "QUOTED"
    CONFLICTING = "CONFLICTING"
    # Decided from the key's record.
    UNKNOWN = "UNKNOWN"
    # The operator suspended the key's organization: checked before the key's own standing.
    ORGANIZATION_SUSPENDED = "ORGANIZATION_SUSPENDED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"
    DISABLED = "DISABLED"
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    RATE_LIMITED = "RATE_LIMITED"
    CREDITS_EXHAUSTED = "CREDITS_EXHAUSTED"
    # Not an answer about the key: the database did not answer for a key not in the cache.
    UNAVAILABLE = "UNAVAILABLE"

    @property
    def http_status(self) -> int:
        if self is Outcome.VALID:
            return 200
        if self in _FORBIDDEN:
            # The key is known and sound, but may not do this (from here, or any more).
            return 403
        if self is Outcome.RATE_LIMITED:
            return 429
        if self is Outcome.UNAVAILABLE:
            return 503
        return 401

    @property
    def is_attributable(self) -> bool:
        """Whether the outcome belongs to a known key (and so to an organization's usage)."""
        return self in _ATTRIBUTABLE


_ATTRIBUTABLE = frozenset(
    {
        Outcome.VALID,
        Outcome.RATE_LIMITED,
        Outcome.INSUFFICIENT_SCOPE,
        Outcome.REVOKED,
        Outcome.EXPIRED,
        Outcome.SUPERSEDED,
        Outcome.DISABLED,
        Outcome.IP_NOT_ALLOWED,
        Outcome.CREDITS_EXHAUSTED,
        Outcome.ORGANIZATION_SUSPENDED,
    }
)
# CREDITS_EXHAUSTED is a 403, not a 429: waiting a little does not help (the next refill may be
# a month away, or never), and nginx's auth_request passes 401 and 403 through but no 429.
_FORBIDDEN = frozenset(
    {
        Outcome.INSUFFICIENT_SCOPE,
        Outcome.IP_NOT_ALLOWED,
        Outcome.CREDITS_EXHAUSTED,
        Outcome.ORGANIZATION_SUSPENDED,
    }
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a key was refused: a code for machines, a message and a hint for the person."""

    outcome: Outcome
    message: str
    hint: str
