"""The rules a key's input must meet (name, scopes, expiry, rate limit, metadata, allowlist,
credits), and the errors that say which one it missed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from app.auth.network import NetworkProblem, parse_network
from app.auth.principal import Caller
from app.keys import idempotency
from app.keys.schemas import (
    CREDITS_MAX,
    EXPIRES_IN_DAYS_MAX,
    IP_ALLOWLIST_MAX,
    META_MAX_BYTES,
    META_MAX_DEPTH,
    META_MAX_KEYS,
    NAME_MAX_LENGTH,
    RATE_LIMIT_REQUESTS_MAX,
    RATE_LIMIT_WINDOW_MAX,
    Credits,
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
        name_error(name),
        scopes_error(scopes, caller, catalogue),
        _expiry_error(data.expires_in_days, policy),
        rate_limit_error(data.rate_limit),
    ]
    return name, scopes, [error for error in found if error is not None]


def name_error(name: str) -> UserError | None:
    if not name:
        return UserError(UserErrorCode.INVALID_INPUT, "name", "Name cannot be empty.")
    problem = name_problem(name, max_length=NAME_MAX_LENGTH)
    if problem is not None:
        return UserError(UserErrorCode.INVALID_INPUT, "name", f"Name {problem}.")
    return None


def scopes_error(scopes: list[str], caller: Caller, catalogue: ScopeCatalogue) -> UserError | None:
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


def rate_limit_error(limit: RateLimit | None) -> UserError | None:
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


def _invalid(field: str, message: str) -> UserError:
    return UserError(UserErrorCode.INVALID_INPUT, field, message)


def _depth(value: Any) -> int:
    """How deep objects and arrays nest: a flat object is 1."""
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def check_meta(meta: Any) -> str | UserError | None:
    """The metadata as stored (compact JSON text), None when cleared, or what is wrong."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return _invalid("meta", 'meta must be a JSON object, e.g. {"customerId": "cus_123"}.')
    if len(meta) > META_MAX_KEYS:
        return _invalid("meta", f"meta may hold at most {META_MAX_KEYS} keys, got {len(meta)}.")
    depth = _depth(meta)
    if depth > META_MAX_DEPTH:
        return _invalid("meta", f"meta may nest at most {META_MAX_DEPTH} levels deep, got {depth}.")
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode())
    if size > META_MAX_BYTES:
        return _invalid(
            "meta", f"meta may take at most {META_MAX_BYTES} bytes as JSON, got {size}."
        )
    return text


def check_ip_allowlist(entries: Sequence[str] | None) -> str | UserError | None:
    """The allowlist as stored (space-separated networks, each once, in the order given), None
    when cleared (an empty list too), or the first entry that is wrong."""
    if not entries:
        return None
    if len(entries) > IP_ALLOWLIST_MAX:
        return _invalid(
            "ipAllowlist",
            f"ipAllowlist may hold at most {IP_ALLOWLIST_MAX} entries, got {len(entries)}.",
        )
    networks: dict[str, None] = {}
    for index, entry in enumerate(entries):
        try:
            networks[str(parse_network(entry))] = None
        except NetworkProblem as problem:
            return _invalid(
                "ipAllowlist", f"ipAllowlist entry {index} '{excerpt(entry, 64)}' {problem}."
            )
    return " ".join(networks)


def credits_error(credits: Credits | None) -> UserError | None:
    if credits is None:
        return None
    if not 0 <= credits.remaining <= CREDITS_MAX:
        return _invalid(
            "credits",
            f"credits.remaining must be between 0 and {CREDITS_MAX:,}, got {credits.remaining}.",
        )
    refill = credits.refill
    if refill is not None and not 1 <= refill.amount <= CREDITS_MAX:
        return _invalid(
            "credits",
            f"credits.refill.amount must be between 1 and {CREDITS_MAX:,}, got {refill.amount}.",
        )
    return None
