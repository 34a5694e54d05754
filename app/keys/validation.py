"""The rules a key's input must meet (name, scopes, expiry, rate limit), and the errors that
say which one it missed."""

from __future__ import annotations

from app.auth.principal import Caller
from app.keys import idempotency
from app.keys.schemas import (
    EXPIRES_IN_DAYS_MAX,
    NAME_MAX_LENGTH,
    RATE_LIMIT_REQUESTS_MAX,
    RATE_LIMIT_WINDOW_MAX,
    KeyCreate,
    RateLimit,
)
from app.keys.scopes import ScopeCatalogue
from app.kit.boundary import excerpt, name_problem
from app.kit.errors import UserError, UserErrorCode
from app.models.organizations import Organization


def check_create(
    data: KeyCreate, caller: Caller, catalogue: ScopeCatalogue, policy: Organization
) -> tuple[str, list[str], list[UserError]]:
    """The trimmed name, the sorted scopes, and every problem of the input at once."""
    name = data.name.strip()
    scopes = sorted(set(data.scopes))
    found = [
        _name_error(name),
        _scopes_error(scopes, caller, catalogue),
        _expiry_error(data.expires_in_days, policy),
        _rate_limit_error(data.rate_limit),
    ]
    return name, scopes, [error for error in found if error is not None]


def _name_error(name: str) -> UserError | None:
    if not name:
        return UserError(UserErrorCode.INVALID_INPUT, "name", "Name cannot be empty.")
    problem = name_problem(name, max_length=NAME_MAX_LENGTH)
    if problem is not None:
        return UserError(UserErrorCode.INVALID_INPUT, "name", f"Name {problem}.")
    return None


def _scopes_error(scopes: list[str], caller: Caller, catalogue: ScopeCatalogue) -> UserError | None:
    if not scopes:
        return UserError(UserErrorCode.INVALID_SCOPE, "scopes", "Give the key at least one scope.")
    unknown = catalogue.unknown(scopes)
    if unknown:
        return UserError(
            UserErrorCode.INVALID_SCOPE,
            "scopes",
            f"Unknown scope(s): {excerpt(', '.join(unknown))}. Known scopes: "
            f"{', '.join(sorted(catalogue.names()))}.",
        )
    not_held = [scope for scope in scopes if not caller.holds(scope)]
    if not_held:
        # The catalogue's own names: nothing of the input is quoted.
        return UserError(
            UserErrorCode.FORBIDDEN,
            "scopes",
            f"A key cannot grant scopes it does not hold itself: {', '.join(not_held)}.",
        )
    return None


def _expiry_error(days: int | None, policy: Organization) -> UserError | None:
    if days is not None and not 1 <= days <= EXPIRES_IN_DAYS_MAX:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "expiresInDays",
            f"expiresInDays must be between 1 and {EXPIRES_IN_DAYS_MAX}, got {days}.",
        )
    longest = policy.max_expires_in_days
    if longest is not None and (days is None or days > longest):
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "expiresInDays",
            "The organization's key policy (maxExpiresInDays) limits keys to "
            f"{longest} days; give expiresInDays of at most that.",
        )
    if policy.require_expiry and days is None:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "expiresInDays",
            "The organization's key policy (requireExpiry) requires every key to expire; "
            "give expiresInDays.",
        )
    return None


def _rate_limit_error(limit: RateLimit | None) -> UserError | None:
    if limit is None or (
        1 <= limit.requests <= RATE_LIMIT_REQUESTS_MAX
        and 1 <= limit.per_seconds <= RATE_LIMIT_WINDOW_MAX
    ):
        return None
    return UserError(
        UserErrorCode.INVALID_INPUT,
        "rateLimit",
        f"rateLimit needs 1 to {RATE_LIMIT_REQUESTS_MAX:,} requests per 1 to "
        f"{RATE_LIMIT_WINDOW_MAX:,} seconds, got {limit.requests} per {limit.per_seconds}.",
    )


def name_taken(name: str) -> UserError:
    return UserError(
        UserErrorCode.NAME_TAKEN,
        "name",
        f"A key named '{excerpt(name)}' (or a name that reads the same, ignoring case and "
        "character width) already exists in your organization; revoke it or pick another name.",
    )


def idempotency_misuse() -> UserError:
    return UserError(
        UserErrorCode.INVALID_INPUT,
        "idempotencyKey",
        "This idempotency key was already used for a different request; use a new key for a "
        "new request.",
    )


def check_idempotency_key(value: str | None) -> UserError | None:
    if value is not None and not 1 <= len(value) <= idempotency.MAX_LENGTH:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "idempotencyKey",
            f"An idempotency key has 1 to {idempotency.MAX_LENGTH} characters.",
        )
    return None


def not_found(key_id: str) -> UserError:
    # The same answer for an unknown id, a malformed one and another organization's key.
    return UserError(UserErrorCode.NOT_FOUND, "id", f"No API key with id '{excerpt(key_id, 64)}'.")
