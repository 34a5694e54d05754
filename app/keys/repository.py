"""The SQL of key management: every statement that reads or writes keys, confined to the
caller's organization. Rules live in the services (service.py, rotation.py, revocation.py)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    func,
    join,
    literal,
    or_,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.keys.schemas import EXPIRES_IN_DAYS_MAX, KeyCounts, KeyFilter, KeyPage
from app.keys.scopes import ScopeCatalogue
from app.kit.boundary import excerpt, name_key
from app.kit.db import UTCDateTime, execute_core
from app.kit.errors import BadUserInput
from app.kit.ids import is_id_of
from app.kit.pagination import COUNT_LIMIT, Cursor
from app.kit.timeutil import utcnow
from app.models.keys import ApiKey, ApiKeyScope, KeyStatus, KeySupersession, ListedKey

_LISTED_COLUMNS = tuple(ApiKey.__table__.c[field.name] for field in fields(ListedKey))  # type: ignore[attr-defined]


async def live_name_exists(
    session: AsyncSession, organization_id: str, name: str, *, other_than: str | None = None
) -> bool:
    """Whether a live key of the organization (other than ``other_than``) has this name."""
    statement = select(ApiKey.id).where(
        col(ApiKey.organization_id) == organization_id,
        col(ApiKey.name_key) == name_key(name),
        col(ApiKey.revoked_at).is_(None),
        col(ApiKey.superseded_at).is_(None),
    )
    if other_than is not None:
        statement = statement.where(col(ApiKey.id) != other_than)
    return (await session.exec(statement)).first() is not None


async def insert_key(session: AsyncSession, api_key: ApiKey) -> bool:
    """Add the key; False if a concurrent request took its name first."""
    try:
        # A savepoint: losing a race on the unique name must not undo the caller's transaction.
        async with session.begin_nested():
            add_key(session, api_key)
    except IntegrityError:
        return False
    return True


def add_key(session: AsyncSession, api_key: ApiKey) -> None:
    """Add a new key with a row for each of its scopes (what the scope filter reads)."""
    session.add(api_key)
    session.add_all(api_key.scope_rows())


async def replace_scope_rows(session: AsyncSession, api_key: ApiKey) -> None:
    """The key's scope rows, made again from its scopes after an update changed them."""
    await session.exec(delete(ApiKeyScope).where(col(ApiKeyScope.api_key_id) == api_key.id))
    session.add_all(api_key.scope_rows())


# Oldest first: the order a creation reports the keys it superseded in, and a replay too.
SUPERSEDED_ORDER = (col(ApiKey.created_at), col(ApiKey.id))


def supersedable(organization_id: str, now: datetime, *, keep: Sequence[str]) -> list[Any]:
    """The keys a new key replaces under the single-active-key policy: the organization's
    active keys not yet replaced, except those in ``keep``. The one rule for superseding and
    for telling how many keys the next creation will supersede."""
    return [
        col(ApiKey.organization_id) == organization_id,
        col(ApiKey.id).not_in(keep),
        status_condition(KeyStatus.ACTIVE, now),
        col(ApiKey.superseded_at).is_(None),
    ]


# A creation answers with the keys it superseded up to this many: under the single-active-key
# policy an organization's first new key may supersede every one of its keys.
SUPERSEDED_LISTED = 100


async def superseded_by(session: AsyncSession, caller: Caller, key_id: str) -> list[ApiKey]:
    """The keys the single-active-key policy replaced with this one, oldest first, up to
    SUPERSEDED_LISTED (what a creation answers with, and its replay)."""
    statement = (
        select(ApiKey)
        .where(
            col(ApiKey.organization_id) == caller.organization_id,
            col(ApiKey.superseded_by_key_id) == key_id,
        )
        .order_by(*SUPERSEDED_ORDER)
        .limit(SUPERSEDED_LISTED)
    )
    return list((await session.exec(statement)).all())


def _covered_by(supersession: KeySupersession) -> list[Any]:
    """SQL for ``KeySupersession.covers``: the keys ``supersedable`` named when the replacement
    was created, that are not marked yet."""
    kept = [supersession.replacement_key_id]
    if supersession.kept_key_id is not None:
        kept.append(supersession.kept_key_id)
    moment = supersession.replaced_before
    return [
        *supersedable(supersession.organization_id, moment, keep=kept),
        col(ApiKey.created_at) <= moment,
    ]


async def supersede_batch(
    session: AsyncSession, supersession: KeySupersession, *, limit: int
) -> tuple[list[str], bool]:
    """Mark the next ``limit`` keys the supersession covers, oldest first (walking the
    organization's keys by creation from where the previous batch stopped), and advance its
    progress; the ids marked, and whether keys may remain."""
    after: list[Any] = []
    if supersession.done_created_at is not None:
        done = supersession.done_created_at
        after = [
            # The bound on its own: the index range starts where the previous batch stopped (an
            # OR alone would walk the keys marked already, one batch more each time).
            col(ApiKey.created_at) >= done,
            or_(
                col(ApiKey.created_at) > done,
                and_(col(ApiKey.created_at) == done, col(ApiKey.id) > supersession.done_key_id),
            ),
        ]
    batch = (
        sa_select(col(ApiKey.id), col(ApiKey.created_at))
        .where(*_covered_by(supersession), *after)
        .order_by(*SUPERSEDED_ORDER)
        .limit(limit)
    )
    rows = (await execute_core(session, batch)).all()
    if not rows:
        return [], False
    ids = [row.id for row in rows]
    # The conditions again: a key revoked or rotated since the batch was read stays as it is.
    await session.exec(
        update(ApiKey)
        .where(col(ApiKey.id).in_(ids), *_covered_by(supersession))
        .values(
            superseded_at=supersession.effective_at,
            superseded_by_key_id=supersession.replacement_key_id,
        )
        .execution_options(synchronize_session=False)
    )
    supersession.done_created_at, supersession.done_key_id = rows[-1].created_at, rows[-1].id
    return ids, len(rows) == limit


def marked_in(ids: Sequence[str], replacement_id: str) -> Select[Any]:
    """Those of ``ids`` that a batch marked as replaced by ``replacement_id``."""
    return sa_select(col(ApiKey.id)).where(
        col(ApiKey.id).in_(ids), col(ApiKey.superseded_by_key_id) == replacement_id
    )


async def pending_supersession(session: AsyncSession, organization_id: str) -> bool:
    """Whether a supersession of the organization still has keys to mark."""
    statement = sa_select(KeySupersession.replacement_key_id).where(  # type: ignore[call-overload]
        col(KeySupersession.organization_id) == organization_id
    )
    return (await execute_core(session, statement.limit(1))).first() is not None


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


def status_condition(status: KeyStatus, now: datetime | BindParameter[datetime]) -> Any:
    """SQL for ``ApiKey.status_at(now) == status`` (revoked, then superseded, then expired,
    then disabled)."""
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
    unexpired = and_(in_play, or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now))
    if status is KeyStatus.DISABLED:
        return and_(unexpired, col(ApiKey.enabled).is_(False))
    return and_(unexpired, col(ApiKey.enabled).is_(True))


def _source(scope: bool) -> tuple[Any, Any, Any]:
    """What a list reads, and the (created_at, id) it is ordered by: the keys, or under a scope
    filter the scope's rows joined to their keys, so that one index walk over the scope's rows
    yields the page in order."""
    if not scope:
        return ApiKey.__table__, col(ApiKey.created_at), col(ApiKey.id)  # type: ignore[attr-defined]
    joined = join(
        ApiKeyScope.__table__,  # type: ignore[attr-defined]
        ApiKey.__table__,  # type: ignore[attr-defined]
        col(ApiKeyScope.api_key_id) == col(ApiKey.id),
    )
    return joined, col(ApiKeyScope.created_at), col(ApiKeyScope.api_key_id)


def _conditions(status: KeyStatus | None, *, expiring: bool, scope: bool) -> list[Any]:
    """The conditions of one shape of list filter, every value a bound parameter."""
    now = bindparam("now", type_=UTCDateTime())
    organization_id: BindParameter[str] = bindparam("organization_id")
    conditions: list[Any] = [col(ApiKey.organization_id) == organization_id]
    if scope:
        conditions.append(col(ApiKeyScope.organization_id) == organization_id)
        conditions.append(col(ApiKeyScope.scope) == bindparam("scope"))
    if status is not None:
        conditions.append(status_condition(status, now))
    if expiring:
        conditions.append(status_condition(KeyStatus.ACTIVE, now))
        # Implied by ACTIVE, but there inside an OR (a key without expiry is active too), where
        # no index range can use it: stated on its own, the expiry index is read from now to
        # the horizon, not from the organization's first expired key (half of those that expire).
        conditions.append(col(ApiKey.expires_at) > now)
        conditions.append(col(ApiKey.expires_at) <= bindparam("expiring_before"))
    return conditions


@functools.cache
def _listing(
    status: KeyStatus | None, *, expiring: bool, scope: bool, after: bool, counted: bool
) -> Select[Any]:
    """The page statement of one shape of list query. Built once per shape, with every value a
    bound parameter: building a statement costs more than running it on a page of keys, and a
    reused statement also skips SQLAlchemy's cache-key computation. ``counted``: each row also
    carries the list's capped count (an uncorrelated subquery, computed once), so a page that
    shows its total is still one round trip."""
    source, created_at, key_id = _source(scope)
    count = [_count_of(status, expiring=expiring, scope=scope)] if counted else []
    conditions = _conditions(status, expiring=expiring, scope=scope)
    if after:
        after_created_at = bindparam("after_created_at", type_=UTCDateTime())
        conditions.append(
            or_(
                created_at < after_created_at,
                and_(created_at == after_created_at, key_id < bindparam("after_id")),
            )
        )
    return (
        sa_select(*_LISTED_COLUMNS, *count)
        .select_from(source)
        .where(*conditions)
        .order_by(created_at.desc(), key_id.desc())
        .limit(bindparam("limit", type_=Integer()))
    )


def _capped_count(*conditions: Any, order: Sequence[Any], source: Any = None) -> Any:
    """How many keys meet the conditions, up to COUNT_LIMIT: it stops there, so it reads at most
    that many entries of the index that ``order`` names, however many keys the organization
    holds. The order changes no count; it tells the planner which index to walk, where an
    unordered LIMIT may look cheapest as a scan of the whole table."""
    matching = (
        sa_select(literal(1))
        .select_from(ApiKey if source is None else source)
        .where(*conditions)
        .order_by(*order)
        .limit(COUNT_LIMIT)
    )
    return sa_select(func.count()).select_from(matching.subquery()).scalar_subquery()


# The index each status's count walks: the keys by age (all, active, revoked: a partial index of
# its own), or the partial indexes on the moment a key expired or was superseded.
_NEWEST = (col(ApiKey.created_at).desc(), col(ApiKey.id).desc())
_COUNT_ORDER = {
    None: _NEWEST,
    KeyStatus.ACTIVE: _NEWEST,
    KeyStatus.REVOKED: _NEWEST,
    KeyStatus.EXPIRED: (col(ApiKey.expires_at).desc(),),
    KeyStatus.SUPERSEDED: (col(ApiKey.superseded_at).desc(),),
    KeyStatus.DISABLED: _NEWEST,
}


@functools.cache
def _counting(status: KeyStatus | None, *, expiring: bool, scope: bool) -> Select[Any]:
    return sa_select(_count_of(status, expiring=expiring, scope=scope))


def _count_of(status: KeyStatus | None, *, expiring: bool, scope: bool) -> Any:
    conditions = _conditions(status, expiring=expiring, scope=scope)
    source, created_at, key_id = _source(scope)
    order = (
        (col(ApiKey.expires_at),)
        if expiring
        else (created_at.desc(), key_id.desc())
        if scope
        else _COUNT_ORDER[status]
    )
    return _capped_count(*conditions, order=order, source=source)


def _filter_values(
    caller: Caller, key_filter: KeyFilter, catalogue: ScopeCatalogue
) -> dict[str, Any]:
    """The bound values of a list filter, checked."""
    now = utcnow()
    values: dict[str, Any] = {"organization_id": caller.organization_id, "now": now}
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
        values["scope"] = key_filter.scope
    return values


def _shape(key_filter: KeyFilter) -> dict[str, Any]:
    return {
        "expiring": key_filter.expiring_within_days is not None,
        "scope": key_filter.scope is not None,
    }


async def list_keys(
    session: AsyncSession,
    caller: Caller,
    key_filter: KeyFilter,
    *,
    first: int,
    after: Cursor | None = None,
    catalogue: ScopeCatalogue,
    counted: bool = False,
) -> KeyPage:
    """A page of the organization's keys, newest first; with ``counted``, also how many the
    list holds (up to COUNT_LIMIT), in the same statement."""
    values = _filter_values(caller, key_filter, catalogue)
    values["limit"] = first + 1
    if after is not None:
        values["after_created_at"] = after.created_at
        values["after_id"] = after.id
    page = _listing(
        key_filter.status, after=after is not None, counted=counted, **_shape(key_filter)
    )
    rows = (await execute_core(session, page, values)).all()
    width = len(_LISTED_COLUMNS)
    keys = [ListedKey(*row[:width]) for row in rows[:first]]
    total: int | None = None
    if counted:
        if rows:
            total = rows[0][width]
        elif after is None:
            total = 0  # the page's conditions are the count's
        else:
            total = await count_listed_keys(session, caller, key_filter, catalogue=catalogue)
    return KeyPage(keys=keys, has_next_page=len(rows) > first, total_count=total)


async def count_listed_keys(
    session: AsyncSession, caller: Caller, key_filter: KeyFilter, *, catalogue: ScopeCatalogue
) -> int:
    """How many keys list_keys would list, up to COUNT_LIMIT."""
    values = _filter_values(caller, key_filter, catalogue)
    statement = _counting(key_filter.status, **_shape(key_filter))
    count: int = (await execute_core(session, statement, values)).scalar_one()
    return count


async def count_keys(session: AsyncSession, caller: Caller) -> KeyCounts:
    """The organization's keys by status, each up to COUNT_LIMIT, in one statement."""
    now = utcnow()
    organization = col(ApiKey.organization_id) == caller.organization_id
    statement = sa_select(
        _capped_count(organization, order=_NEWEST),
        *(
            _capped_count(organization, status_condition(status, now), order=_COUNT_ORDER[status])
            for status in (
                KeyStatus.ACTIVE,
                KeyStatus.REVOKED,
                KeyStatus.EXPIRED,
                KeyStatus.SUPERSEDED,
            )
        ),
    )
    total, active, revoked, expired, superseded = (await execute_core(session, statement)).one()
    return KeyCounts(
        total=total, active=active, revoked=revoked, expired=expired, superseded=superseded
    )


async def count_supersedable_keys(session: AsyncSession, caller: Caller) -> int:
    """How many keys the caller's next key creation would supersede under single-active-key,
    up to COUNT_LIMIT."""
    keep = [] if caller.key_id is None else [caller.key_id]
    conditions = supersedable(caller.organization_id, utcnow(), keep=keep)
    statement = sa_select(_capped_count(*conditions, order=_NEWEST))
    count: int = (await execute_core(session, statement)).scalar_one()
    return count


async def last_used_by_id(session: AsyncSession, key_ids: Sequence[str]) -> dict[str, datetime]:
    """``last_used_at`` of many keys in one statement (for the per-request DataLoader)."""
    statement = select(ApiKey.id, ApiKey.last_used_at).where(
        col(ApiKey.id).in_(key_ids), col(ApiKey.last_used_at).is_not(None)
    )
    return {key_id: used for key_id, used in (await session.exec(statement)).all() if used}


# Rotations chain (a key, its replacement, that one's replacement...); a caller in its grace
# period is at most a few rotations behind, and this bounds the walk.
_SUCCESSOR_CHAIN_MAX = 16


async def successors(session: AsyncSession, key_id: str) -> set[str]:
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


async def claim_for_rotation(
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
