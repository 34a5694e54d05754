"""Key management: create, list, read, rotate and revoke an organization's API keys.

Every function takes the session first and the caller second; each one confines itself to the
caller's organization, so a key of one organization never reads or changes another's keys.
Functions flush, never commit: the request (or CLI command) owns the transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, Integer, Select, and_, bindparam, case, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.audit.service import record_event
from app.auth.principal import Caller
from app.auth.secret import generate_secret, hash_secret, hint_for
from app.keys import idempotency
from app.keys.broadcast import KeyChangeBroadcast
from app.keys.scopes import ScopeCatalogue
from app.kit.boundary import excerpt, name_key, name_problem
from app.kit.db import UTCDateTime, after_commit, execute_core
from app.kit.errors import BadUserInput, UserError, UserErrorCode
from app.kit.ids import is_id_of
from app.kit.pagination import Cursor
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction
from app.models.keys import ApiKey, KeyStatus, ListedKey
from app.models.organizations import Organization

NAME_MAX_LENGTH = 128
EXPIRES_IN_DAYS_MAX = 3650
RATE_LIMIT_REQUESTS_MAX = 1_000_000
RATE_LIMIT_WINDOW_MAX = 86_400  # a day

_LISTED_COLUMNS = tuple(ApiKey.__table__.c[field.name] for field in fields(ListedKey))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    per_seconds: int


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
    total_count: int
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class KeyCounts:
    total: int
    active: int
    revoked: int
    expired: int
    superseded: int


def _check_create(
    data: KeyCreate, caller: Caller, catalogue: ScopeCatalogue, policy: Organization
) -> tuple[str, list[str], list[UserError]]:
    errors: list[UserError] = []
    name = data.name.strip()
    problem = name_problem(name, max_length=NAME_MAX_LENGTH)
    if not name:
        errors.append(UserError(UserErrorCode.INVALID_INPUT, "name", "Name cannot be empty."))
    elif problem is not None:
        errors.append(UserError(UserErrorCode.INVALID_INPUT, "name", f"Name {problem}."))
    scopes = sorted(set(data.scopes))
    unknown = catalogue.unknown(scopes)
    if not scopes:
        errors.append(
            UserError(UserErrorCode.INVALID_SCOPE, "scopes", "Give the key at least one scope.")
        )
    elif unknown:
        errors.append(
            UserError(
                UserErrorCode.INVALID_SCOPE,
                "scopes",
                f"Unknown scope(s): {excerpt(', '.join(unknown))}. The `scopes` query lists "
                "them all.",
            )
        )
    else:
        not_held = [scope for scope in scopes if not caller.holds(scope)]
        if not_held:
            errors.append(
                UserError(
                    UserErrorCode.FORBIDDEN,
                    "scopes",
                    f"A key cannot grant scopes it does not hold itself: {', '.join(not_held)}.",
                )
            )
    days = data.expires_in_days
    if days is not None and not 1 <= days <= EXPIRES_IN_DAYS_MAX:
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "expiresInDays",
                f"expiresInDays must be between 1 and {EXPIRES_IN_DAYS_MAX}, got {days}.",
            )
        )
    elif policy.max_expires_in_days is not None and (
        days is None or days > policy.max_expires_in_days
    ):
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "expiresInDays",
                "The organization's key policy (maxExpiresInDays) limits keys to "
                f"{policy.max_expires_in_days} days; give expiresInDays of at most that.",
            )
        )
    elif policy.require_expiry and days is None:
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "expiresInDays",
                "The organization's key policy (requireExpiry) requires every key to expire; "
                "give expiresInDays.",
            )
        )
    limit = data.rate_limit
    if limit is not None and not (
        1 <= limit.requests <= RATE_LIMIT_REQUESTS_MAX
        and 1 <= limit.per_seconds <= RATE_LIMIT_WINDOW_MAX
    ):
        errors.append(
            UserError(
                UserErrorCode.INVALID_INPUT,
                "rateLimit",
                f"rateLimit needs 1 to {RATE_LIMIT_REQUESTS_MAX:,} requests per 1 to "
                f"{RATE_LIMIT_WINDOW_MAX:,} seconds, got {limit.requests} per "
                f"{limit.per_seconds}.",
            )
        )
    return name, scopes, errors


def _name_taken(name: str) -> UserError:
    return UserError(
        UserErrorCode.NAME_TAKEN,
        "name",
        f"A key named '{excerpt(name)}' (or a name that reads the same, ignoring case and "
        "character width) already exists in your organization; revoke it or pick another name.",
    )


async def _live_name_exists(session: AsyncSession, organization_id: str, name: str) -> bool:
    statement = select(ApiKey.id).where(
        col(ApiKey.organization_id) == organization_id,
        col(ApiKey.name_key) == name_key(name),
        col(ApiKey.revoked_at).is_(None),
        col(ApiKey.superseded_at).is_(None),
    )
    return (await session.exec(statement)).first() is not None


def _idempotency_misuse() -> UserError:
    return UserError(
        UserErrorCode.INVALID_INPUT,
        "idempotencyKey",
        "This idempotency key was already used for a different request; use a new key for a "
        "new request.",
    )


def _check_idempotency_key(value: str | None) -> UserError | None:
    if value is not None and not 1 <= len(value) <= idempotency.MAX_LENGTH:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "idempotencyKey",
            f"An idempotency key has 1 to {idempotency.MAX_LENGTH} characters.",
        )
    return None


async def _insert_key(session: AsyncSession, api_key: ApiKey) -> bool:
    """Add the key; False if a concurrent request took its name first."""
    try:
        # A savepoint: losing a race on the unique name must not undo the caller's transaction.
        async with session.begin_nested():
            session.add(api_key)
    except IntegrityError:
        return False
    return True


# Oldest first: the order a creation reports the keys it superseded in, and a replay too.
_SUPERSEDED_ORDER = (col(ApiKey.created_at), col(ApiKey.id))


def _supersedable(caller: Caller, now: datetime, *, keep: Sequence[str]) -> list[Any]:
    """The keys a new key replaces under the single-active-key policy: the organization's
    active keys not yet replaced, except those in ``keep``. The one rule for superseding and
    for telling how many keys the next creation will supersede."""
    return [
        col(ApiKey.organization_id) == caller.organization_id,
        col(ApiKey.id).not_in(keep),
        _status_condition(KeyStatus.ACTIVE, now),
        col(ApiKey.superseded_at).is_(None),
    ]


async def _supersede_others(
    session: AsyncSession,
    caller: Caller,
    replacement: ApiKey,
    *,
    grace_hours: int,
    keep: Sequence[str],
    broadcast: KeyChangeBroadcast,
) -> list[ApiKey]:
    """Single-active-key policy: every other active key of the organization is replaced by
    ``replacement`` after the grace period. The caller's own key is kept (``keep``): a caller
    never locks itself out."""
    now = utcnow()
    statement = (
        select(ApiKey)
        .where(*_supersedable(caller, now, keep=[replacement.id, *keep]))
        .order_by(*_SUPERSEDED_ORDER)
    )
    superseded = list((await session.exec(statement)).all())
    effective = now + timedelta(hours=grace_hours)
    for old in superseded:
        old.superseded_at = effective
        old.superseded_by_key_id = replacement.id
        session.add(old)
        record_event(
            session,
            caller,
            AuditAction.KEY_SUPERSEDED,
            api_key_id=old.id,
            details={
                "supersededByKeyId": replacement.id,
                "supersededByHint": replacement.hint,
                "effectiveAt": effective.isoformat(),
                "reason": "singleActiveKey policy",
            },
        )
        _announce_after_commit(session, broadcast, old.id)
    return superseded


async def _superseded_by(session: AsyncSession, caller: Caller, key_id: str) -> list[ApiKey]:
    """The keys the single-active-key policy replaced with this one (for a replayed answer)."""
    statement = (
        select(ApiKey)
        .where(
            col(ApiKey.organization_id) == caller.organization_id,
            col(ApiKey.superseded_by_key_id) == key_id,
        )
        .order_by(*_SUPERSEDED_ORDER)
    )
    return list((await session.exec(statement)).all())


def _announce_after_commit(
    session: AsyncSession, broadcast: KeyChangeBroadcast, key_id: str
) -> None:
    # Only after the commit: a verification that reloads the key must see the change.
    after_commit(session, lambda: broadcast.key_changed(key_id))


async def create_key(
    session: AsyncSession,
    caller: Caller,
    data: KeyCreate,
    *,
    catalogue: ScopeCatalogue,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
    server_secret: bytes | None = None,
) -> KeyCreated | list[UserError]:
    """``server_secret`` seals the secret of a request sent with an idempotency key."""
    policy = await session.get(Organization, caller.organization_id)
    assert policy is not None, "a caller's organization exists"
    misuse = _check_idempotency_key(data.idempotency_key)
    if misuse is not None:
        return [misuse]
    # Every check before a replay: a replay must not answer a caller the request would refuse.
    name, scopes, errors = _check_create(data, caller, catalogue, policy)
    if errors:
        return errors
    digest = idempotency.request_digest(
        "createApiKey",
        {
            "name": data.name,
            "scopes": scopes,
            "expiresInDays": data.expires_in_days,
            "rateLimit": data.rate_limit,
        },
        caller.scopes,
    )
    replay = _Replay(session, caller, data.idempotency_key, digest, server_secret)
    replayed = await replay.creation()
    if replayed is not None:
        return replayed

    if await _live_name_exists(session, caller.organization_id, name):
        # Taken by this very request sent twice (a retry while the first was in flight)?
        return await replay.creation() or [_name_taken(name)]

    secret = generate_secret(key_prefix)
    now = utcnow()
    api_key = ApiKey(
        organization_id=caller.organization_id,
        name=name,
        name_key=name_key(name),
        scopes_text=" ".join(scopes),
        key_hash=hash_secret(secret),
        hint=hint_for(secret, key_prefix),
        created_at=now,
        created_by_key_id=caller.key_id,
        expires_at=(
            None if data.expires_in_days is None else now + timedelta(days=data.expires_in_days)
        ),
        rate_limit_requests=None if data.rate_limit is None else data.rate_limit.requests,
        rate_limit_per_seconds=None if data.rate_limit is None else data.rate_limit.per_seconds,
    )
    if not await _insert_key(session, api_key):
        return await replay.creation() or [_name_taken(name)]
    record_event(
        session,
        caller,
        AuditAction.KEY_CREATED,
        api_key_id=api_key.id,
        details={
            "name": name,
            "hint": api_key.hint,
            "scopes": scopes,
            "expiresAt": api_key.expires_at,
            "rateLimit": data.rate_limit,
        },
    )
    superseded: list[ApiKey] = []
    if policy.single_active_key:
        superseded = await _supersede_others(
            session,
            caller,
            api_key,
            grace_hours=policy.supersede_grace_hours,
            keep=[caller.key_id] if caller.key_id else [],
            broadcast=broadcast,
        )
    await replay.remember("createApiKey", api_key.id, secret)
    await session.flush()
    return KeyCreated(api_key, secret, superseded)


@dataclass(frozen=True, slots=True)
class _Replay:
    """One request's idempotency: its earlier answer, if any, and remembering this one's."""

    session: AsyncSession
    caller: Caller
    idempotency_key: str | None
    digest: str
    server_secret: bytes | None

    def _secret(self) -> bytes:
        if self.server_secret is None:
            raise ValueError("an idempotent request needs the server secret")
        return self.server_secret

    async def creation(self) -> KeyCreated | list[UserError] | None:
        replay = await self._earlier("createApiKey")
        if replay is None or isinstance(replay, UserError):
            return None if replay is None else [replay]
        api_key, secret, _ = replay
        # The same answer as the first time: the keys that creation superseded, too.
        superseded = await _superseded_by(self.session, self.caller, api_key.id)
        return KeyCreated(api_key, secret, superseded)

    async def rotation(self) -> KeyRotated | list[UserError] | None:
        replay = await self._earlier("rotateApiKey")
        if replay is None or isinstance(replay, UserError):
            return None if replay is None else [replay]
        api_key, secret, previous = replay
        assert previous is not None, "a rotation record names the rotated key"
        return KeyRotated(api_key, secret, previous)

    async def _earlier(
        self, operation: str
    ) -> tuple[ApiKey, str, ApiKey | None] | UserError | None:
        """The earlier answer to the same request, an error if the idempotency key was used
        for another request (or by a caller of other power), or None when the key is new."""
        if self.idempotency_key is None:
            return None
        session, server_secret = self.session, self._secret()
        record = await idempotency.find(session, self.caller, self.idempotency_key, server_secret)
        if record is None:
            return None
        if record.operation != operation or record.request_digest != self.digest:
            return _idempotency_misuse()
        api_key = await session.get(ApiKey, record.api_key_id)
        secret = idempotency.unseal(record.sealed_secret, self.idempotency_key, server_secret)
        if api_key is None or secret is None:
            return _idempotency_misuse()
        # Fresh from the database: the power checks may have read the rotated key before a
        # concurrent first request replaced it.
        previous = (
            None
            if record.previous_api_key_id is None
            else await session.get(ApiKey, record.previous_api_key_id, populate_existing=True)
        )
        return api_key, secret, previous

    async def remember(
        self, operation: str, api_key_id: str, secret: str, previous_api_key_id: str | None = None
    ) -> None:
        if self.idempotency_key is None:
            return
        await idempotency.remember(
            self.session,
            self.caller,
            self.idempotency_key,
            self._secret(),
            operation=operation,
            digest=self.digest,
            api_key_id=api_key_id,
            secret=secret,
            previous_api_key_id=previous_api_key_id,
        )


async def get_key(session: AsyncSession, caller: Caller, key_id: str) -> ApiKey | None:
    """The caller's organization's key with this id; None for any other id, of any shape."""
    if not is_id_of("key", key_id):
        return None
    statement = select(ApiKey).where(
        col(ApiKey.id) == key_id, col(ApiKey.organization_id) == caller.organization_id
    )
    return (await session.exec(statement)).first()


async def get_keys(
    session: AsyncSession, caller: Caller, key_ids: Sequence[str]
) -> dict[str, ApiKey]:
    """Many of the caller's organization's keys by id, in one statement."""
    statement = select(ApiKey).where(
        col(ApiKey.id).in_(key_ids), col(ApiKey.organization_id) == caller.organization_id
    )
    return {row.id: row for row in (await session.exec(statement)).all()}


def _status_condition(status: KeyStatus, now: datetime | BindParameter[datetime]) -> Any:
    """SQL for ``ApiKey.status_at(now) == status`` (revoked, then superseded, then expired)."""
    if status is KeyStatus.REVOKED:
        return col(ApiKey.revoked_at).is_not(None)
    not_revoked = col(ApiKey.revoked_at).is_(None)
    if status is KeyStatus.SUPERSEDED:
        return and_(not_revoked, col(ApiKey.superseded_at) <= now)
    in_play = and_(
        not_revoked, or_(col(ApiKey.superseded_at).is_(None), col(ApiKey.superseded_at) > now)
    )
    if status is KeyStatus.EXPIRED:
        return and_(in_play, col(ApiKey.expires_at) <= now)
    return and_(in_play, or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now))


def _like_pattern(scope: str) -> str:
    """A LIKE pattern matching ``scope`` as a whole word of the space-separated scopes_text."""
    escaped = scope.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"% {escaped} %"


@functools.cache
def _listing(
    status: KeyStatus | None, *, expiring: bool, scope: bool, after: bool
) -> tuple[Select[Any], Select[Any]]:
    """The page and count statements of one shape of list query. Built once per shape, with every
    value a bound parameter: building a statement costs more than running it on a page of keys,
    and a reused statement also skips SQLAlchemy's cache-key computation."""
    now = bindparam("now", type_=UTCDateTime())
    conditions: list[Any] = [col(ApiKey.organization_id) == bindparam("organization_id")]
    if status is not None:
        conditions.append(_status_condition(status, now))
    if expiring:
        conditions.append(_status_condition(KeyStatus.ACTIVE, now))
        conditions.append(col(ApiKey.expires_at) <= bindparam("expiring_before"))
    if scope:
        # scopes_text is space-separated: pad it so every scope is surrounded by spaces.
        padded = " " + col(ApiKey.scopes_text) + " "
        conditions.append(padded.like(bindparam("scope_pattern"), escape="/"))
    count = sa_select(func.count()).select_from(ApiKey).where(*conditions)
    page_conditions = list(conditions)
    if after:
        after_created_at = bindparam("after_created_at", type_=UTCDateTime())
        page_conditions.append(
            or_(
                col(ApiKey.created_at) < after_created_at,
                and_(
                    col(ApiKey.created_at) == after_created_at,
                    col(ApiKey.id) < bindparam("after_id"),
                ),
            )
        )
    # One statement: the page, each row carrying the list's total (an uncorrelated subquery,
    # computed once).
    page = (
        sa_select(*_LISTED_COLUMNS, count.scalar_subquery())
        .where(*page_conditions)
        .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc())
        .limit(bindparam("limit", type_=Integer()))
    )
    return page, count


async def list_keys(
    session: AsyncSession,
    caller: Caller,
    key_filter: KeyFilter,
    *,
    first: int,
    after: Cursor | None = None,
    catalogue: ScopeCatalogue,
) -> KeyPage:
    """A page of the organization's keys, newest first."""
    now = utcnow()
    values: dict[str, Any] = {
        "organization_id": caller.organization_id,
        "now": now,
        "limit": first + 1,
    }
    if key_filter.expiring_within_days is not None:
        days = key_filter.expiring_within_days
        if not 0 <= days <= EXPIRES_IN_DAYS_MAX:
            raise BadUserInput(
                f"expiringWithinDays must be between 0 and {EXPIRES_IN_DAYS_MAX}, got {days}.",
                argument="filter.expiringWithinDays",
            )
        values["expiring_before"] = now + timedelta(days=days)
    if key_filter.scope is not None:
        if key_filter.scope not in catalogue:
            raise BadUserInput(
                f"Unknown scope '{excerpt(key_filter.scope)}'.", argument="filter.scope"
            )
        values["scope_pattern"] = _like_pattern(key_filter.scope)
    if after is not None:
        values["after_created_at"] = after.created_at
        values["after_id"] = after.id
    page, count = _listing(
        key_filter.status,
        expiring=key_filter.expiring_within_days is not None,
        scope=key_filter.scope is not None,
        after=after is not None,
    )
    rows = (await execute_core(session, page, values)).all()
    if rows:
        total = rows[0][-1]
    elif after is None:
        total = 0  # the page's conditions are the count's
    else:
        total = (await execute_core(session, count, values)).scalar_one()
    keys = [ListedKey(*row[:-1]) for row in rows[:first]]
    return KeyPage(keys=keys, total_count=total, has_next_page=len(rows) > first)


async def count_keys(session: AsyncSession, caller: Caller) -> KeyCounts:
    now = utcnow()

    def counted(status: KeyStatus) -> Any:
        return func.coalesce(func.sum(case((_status_condition(status, now), 1), else_=0)), 0)

    # Five columns: past sqlmodel's typed select overloads, so SQLAlchemy's own.
    statement = sa_select(
        func.count(),
        counted(KeyStatus.ACTIVE),
        counted(KeyStatus.REVOKED),
        counted(KeyStatus.EXPIRED),
        counted(KeyStatus.SUPERSEDED),
    ).where(col(ApiKey.organization_id) == caller.organization_id)
    total, active, revoked, expired, superseded = (await execute_core(session, statement)).one()
    return KeyCounts(
        total=total, active=active, revoked=revoked, expired=expired, superseded=superseded
    )


async def count_supersedable_keys(session: AsyncSession, caller: Caller) -> int:
    """How many keys the caller's next key creation would supersede under single-active-key."""
    keep = [] if caller.key_id is None else [caller.key_id]
    statement = (
        select(func.count()).select_from(ApiKey).where(*_supersedable(caller, utcnow(), keep=keep))
    )
    return (await session.exec(statement)).one()


async def last_used_by_id(session: AsyncSession, key_ids: Sequence[str]) -> dict[str, datetime]:
    """``last_used_at`` of many keys in one statement (for the per-request DataLoader)."""
    statement = select(ApiKey.id, ApiKey.last_used_at).where(
        col(ApiKey.id).in_(key_ids), col(ApiKey.last_used_at).is_not(None)
    )
    return {key_id: used for key_id, used in (await session.exec(statement)).all() if used}


def _not_found(key_id: str) -> UserError:
    # The same answer for an unknown id, a malformed one and another organization's key.
    return UserError(UserErrorCode.NOT_FOUND, "id", f"No API key with id '{excerpt(key_id, 64)}'.")


# Rotations chain (a key, its replacement, that one's replacement...); a caller in its grace
# period is at most a few rotations behind, and this bounds the walk.
_SUCCESSOR_CHAIN_MAX = 16


async def _successors(session: AsyncSession, key_id: str) -> set[str]:
    """The keys that replaced ``key_id``, its replacement's replacement, and so on."""
    found: set[str] = set()
    current: str | None = key_id
    while current is not None and len(found) < _SUCCESSOR_CHAIN_MAX:
        row = await session.get(ApiKey, current)
        current = None if row is None else row.superseded_by_key_id
        if current is None or current in found:
            break
        found.add(current)
    return found


async def _management_refusal(
    session: AsyncSession, caller: Caller, target: ApiKey, verb: str
) -> UserError | None:
    """Why ``caller`` may not revoke or rotate ``target``, if it may not. Managing a key needs
    at least its power; a key may always manage itself (a leaked key's holder revokes it), but a
    key in its grace period never its own replacement (the old secret could kill the new one)."""
    if caller.key_id == target.id:
        return None
    if any(not caller.holds(scope) for scope in target.scopes):
        return UserError(
            UserErrorCode.FORBIDDEN,
            "id",
            f"Only a key holding every scope of this key can {verb} it, and yours lacks some "
            "of them.",
        )
    replaced = caller.being_replaced and caller.key_id is not None
    if replaced and target.id in await _successors(session, str(caller.key_id)):
        return UserError(
            UserErrorCode.FORBIDDEN,
            "id",
            f"Your key was replaced and works only until its grace period ends; it cannot "
            f"{verb} the key that replaced it. Use the new key.",
        )
    return None


async def revoke_key(
    session: AsyncSession, caller: Caller, key_id: str, *, broadcast: KeyChangeBroadcast
) -> ApiKey | UserError:
    """Revoke a key, permanently. Revoking a revoked key changes nothing and answers the same."""
    api_key = await get_key(session, caller, key_id)
    if api_key is None:
        return _not_found(key_id)
    refusal = await _management_refusal(session, caller, api_key, "revoke")
    if refusal is not None:
        return refusal
    if api_key.revoked_at is None:
        api_key.revoked_at = utcnow()
        session.add(api_key)
        record_event(
            session,
            caller,
            AuditAction.KEY_REVOKED,
            api_key_id=api_key.id,
            details={"name": api_key.name, "hint": api_key.hint},
        )
        await session.flush()
        _announce_after_commit(session, broadcast, api_key.id)
    return api_key


async def _claim_for_rotation(
    session: AsyncSession, old: ApiKey, new_id: str, sunset: datetime
) -> bool:
    """Mark ``old`` as replaced by ``new_id`` only if it is still in play, in one statement: a
    concurrent rotation or revocation of the same key is noticed instead of overwritten. The old
    key leaves the unique-name index before its successor takes the name."""
    result = await session.exec(
        update(ApiKey)
        .where(
            col(ApiKey.id) == old.id,
            col(ApiKey.revoked_at).is_(None),
            col(ApiKey.superseded_at).is_(None),
        )
        .values(superseded_at=sunset, superseded_by_key_id=new_id)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _rotated_lifetime(old: ApiKey, policy: Organization) -> timedelta | None:
    """The new key lives as long as the old one did, within the organization's policy."""
    lifetime = None if old.expires_at is None else old.expires_at - old.created_at
    if policy.max_expires_in_days is not None:
        bound = timedelta(days=policy.max_expires_in_days)
        lifetime = bound if lifetime is None else min(lifetime, bound)
    if lifetime is None and policy.require_expiry:
        lifetime = timedelta(days=ROTATION_DEFAULT_DAYS)
    return lifetime


def _unrotatable(old: ApiKey, now: datetime) -> UserError | None:
    """Why ``old`` cannot be rotated: revoked, expired or already replaced."""
    status = old.status_at(now)
    if status is not KeyStatus.ACTIVE:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "id",
            f"Key '{old.name}' ({old.hint}) is {status.value.lower()} and cannot be rotated; "
            "create a new key instead.",
        )
    if old.superseded_at is not None:
        return UserError(
            UserErrorCode.INVALID_INPUT,
            "id",
            f"Key '{old.name}' ({old.hint}) was already rotated and stops working at "
            f"{old.superseded_at.isoformat()}; rotate its replacement instead.",
        )
    return None


async def rotate_key(
    session: AsyncSession,
    caller: Caller,
    data: KeyRotate,
    *,
    key_prefix: str,
    broadcast: KeyChangeBroadcast,
    server_secret: bytes | None = None,
) -> KeyRotated | list[UserError]:
    """A new secret with the old key's name, scopes and limits; the old secret keeps working
    for the grace period (0: it stops at once, for a leaked key), then is SUPERSEDED."""
    misuse = _check_idempotency_key(data.idempotency_key)
    if misuse is not None:
        return [misuse]
    if not 0 <= data.grace_period_hours <= GRACE_HOURS_MAX:
        return [
            UserError(
                UserErrorCode.INVALID_INPUT,
                "gracePeriodHours",
                f"gracePeriodHours must be between 0 and {GRACE_HOURS_MAX}, "
                f"got {data.grace_period_hours}.",
            )
        ]
    old = await get_key(session, caller, data.key_id)
    if old is None:
        return [_not_found(data.key_id)]
    # Every check of power before a replay: a replay must not answer a caller the request
    # itself would refuse.
    refusal = await _management_refusal(session, caller, old, "rotate")
    if refusal is not None:
        return [refusal]
    digest = idempotency.request_digest(
        "rotateApiKey",
        {"id": data.key_id, "gracePeriodHours": data.grace_period_hours},
        caller.scopes,
    )
    replay = _Replay(session, caller, data.idempotency_key, digest, server_secret)
    replayed = await replay.rotation()
    if replayed is not None:
        return replayed
    now = utcnow()
    unrotatable = _unrotatable(old, now)
    if unrotatable is not None:
        # The same request sent twice: the first may have committed since the check above.
        return await replay.rotation() or [unrotatable]
    policy = await session.get(Organization, caller.organization_id)
    assert policy is not None, "a caller's organization exists"

    secret = generate_secret(key_prefix)
    lifetime = _rotated_lifetime(old, policy)
    new = ApiKey(
        organization_id=caller.organization_id,
        name=old.name,
        name_key=old.name_key,
        scopes_text=old.scopes_text,
        key_hash=hash_secret(secret),
        hint=hint_for(secret, key_prefix),
        created_at=now,
        created_by_key_id=caller.key_id,
        expires_at=None if lifetime is None else now + lifetime,
        rate_limit_requests=old.rate_limit_requests,
        rate_limit_per_seconds=old.rate_limit_per_seconds,
    )
    sunset = now + timedelta(hours=data.grace_period_hours)
    try:
        # One savepoint: a name taken meanwhile must not leave the old key marked as replaced.
        async with session.begin_nested():
            claimed = await _claim_for_rotation(session, old, new.id, sunset)
            if claimed:
                session.add(new)
    except IntegrityError:
        return [_name_taken(old.name)]
    if not claimed:
        # Rotated (or revoked) by a concurrent request: if it was this very request sent twice
        # (a retry while the first was in flight), the first one's answer.
        await session.refresh(old)
        return await replay.rotation() or [
            UserError(
                UserErrorCode.INVALID_INPUT,
                "id",
                f"Key '{old.name}' ({old.hint}) was just rotated or revoked by another request; "
                "reload the key to see its state.",
            )
        ]
    set_committed_value(old, "superseded_at", sunset)
    set_committed_value(old, "superseded_by_key_id", new.id)
    record_event(
        session,
        caller,
        AuditAction.KEY_ROTATED,
        api_key_id=old.id,
        details={
            "name": old.name,
            "previousHint": old.hint,
            "newKeyId": new.id,
            "newHint": new.hint,
            "gracePeriodHours": data.grace_period_hours,
            "oldKeyStopsAt": sunset,
        },
    )
    _announce_after_commit(session, broadcast, old.id)
    if policy.single_active_key:
        await _supersede_others(
            session,
            caller,
            new,
            grace_hours=policy.supersede_grace_hours,
            keep=[old.id, *([caller.key_id] if caller.key_id else [])],
            broadcast=broadcast,
        )
    await replay.remember("rotateApiKey", new.id, secret, previous_api_key_id=old.id)
    await session.flush()
    return KeyRotated(new, secret, old)
