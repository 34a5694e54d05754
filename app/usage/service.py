"""Usage analytics: totals, zero-filled series and breakdowns over the pre-aggregated buckets.

Every query is confined to the caller's organization; asking about another organization's key
answers with nothing, exactly as for a key that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Label, Table, and_, case, func, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.outcomes import Outcome
from app.auth.principal import Caller
from app.config import Settings
from app.kit.db import execute_core
from app.kit.errors import BadUserInput
from app.kit.labels import OPERATION_MAX_LENGTH
from app.kit.timeutil import as_utc, utcnow
from app.models.usage import Counts, Granularity, KeyUsage, OrganizationUsage, UsageBucket

MAX_SPAN = {
    Granularity.MINUTE: timedelta(hours=24),
    Granularity.HOUR: timedelta(days=90),
    Granularity.DAY: timedelta(days=3650),
}
MAX_BREAKDOWN = 100
_buckets = UsageBucket.metadata.tables["usage_buckets"]
_organizations = OrganizationUsage.metadata.tables["organization_usage"]
_keys = KeyUsage.metadata.tables["key_usage"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: datetime
    end: datetime
    granularity: Granularity
    api_key_id: str | None = None
    operation: str | None = None
    outcome: Outcome | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    start: datetime
    counts: Counts


@dataclass(frozen=True, slots=True)
class Share:
    """One row of a breakdown: a key id, an operation label or an outcome, with its counts."""

    label: str
    counts: Counts


def floor_to(moment: datetime, granularity: Granularity) -> datetime:
    seconds = int(as_utc(moment).timestamp())
    return datetime.fromtimestamp(seconds - seconds % granularity.seconds, UTC)


def usage_retention(settings: Settings) -> dict[Granularity, timedelta]:
    return {
        Granularity.MINUTE: timedelta(hours=settings.usage_retention_minute_hours),
        Granularity.HOUR: timedelta(days=settings.usage_retention_hour_days),
        Granularity.DAY: timedelta(days=settings.usage_retention_day_days),
    }


def checked_query(
    settings: Settings,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    *,
    api_key_id: str | None = None,
    operation: str | None = None,
    outcome: Outcome | None = None,
) -> UsageQuery:
    """A usage query over [start, end), checked against the span limits and what this
    deployment retains (BAD_USER_INPUT)."""
    query = UsageQuery(start, end, granularity, api_key_id, operation, outcome)
    return check_query(query, retention=usage_retention(settings)[granularity], now=utcnow())


LATEST_AHEAD = timedelta(days=366)


def check_query(query: UsageQuery, *, retention: timedelta, now: datetime) -> UsageQuery:
    """The query with ``start`` floored to its granularity, or a clear BAD_USER_INPUT."""
    try:
        start, end = as_utc(query.start), as_utc(query.end)
    except OverflowError:
        # A moment at the calendar's edge whose offset moves it past year 1 or 9999 in UTC.
        raise BadUserInput(
            "'from' and 'to' must fall between the years 1 and 9999 once in UTC.",
            argument="from",
        ) from None
    granularity = query.granularity
    if start >= end:
        raise BadUserInput("'from' must be before 'to'.", argument="from")
    if end > now + LATEST_AHEAD:
        # Nothing is counted in the future; near the end of the calendar, a series' next step
        # would not even be a date.
        raise BadUserInput(
            f"'to' can be at most {LATEST_AHEAD.days} days after now; usage in the future is "
            "always zero.",
            argument="to",
        )
    if end - start > MAX_SPAN[granularity]:
        raise BadUserInput(
            f"{granularity.value} usage can be asked for at most {_span(MAX_SPAN[granularity])} "
            "at a time; use a coarser granularity or a shorter range.",
            argument="to",
        )
    earliest = floor_to(now - retention, granularity)
    if start < earliest:
        raise BadUserInput(
            f"{granularity.value} usage is kept for {_span(retention)}: the earliest available "
            f"bucket starts at {earliest.isoformat()}. Use a later 'from' or a coarser "
            "granularity.",
            argument="from",
        )
    if query.operation is not None and len(query.operation) > OPERATION_MAX_LENGTH:
        raise BadUserInput(
            f"'operation' has at most {OPERATION_MAX_LENGTH} characters.", argument="operation"
        )
    return UsageQuery(
        start=floor_to(start, granularity),
        end=end,
        granularity=granularity,
        api_key_id=query.api_key_id,
        operation=query.operation,
        outcome=query.outcome,
    )


def check_breakdown_size(first: int) -> int:
    if not 1 <= first <= MAX_BREAKDOWN:
        raise BadUserInput(
            f"'first' must be between 1 and {MAX_BREAKDOWN}, got {first}.", argument="first"
        )
    return first


def _span(span: timedelta) -> str:
    if span.days >= 2:
        return f"{span.days} days"
    return f"{int(span.total_seconds() // 3600)} hours"


def ceil_to(moment: datetime, granularity: Granularity) -> datetime:
    floored = floor_to(moment, granularity)
    return floored if floored == moment else floored + timedelta(seconds=granularity.seconds)


# Totals and breakdowns do not need the requested granularity: any set of buckets that covers
# the range exactly gives the same sums. Whole days are read from DAY buckets and whole hours
# from HOUR buckets, the finer buckets only at the edges: a 30-day HOUR question reads ~30 DAY
# rows per key and label instead of ~720 HOUR rows (benchmarks/usage.py).
_COARSER = {
    Granularity.MINUTE: (Granularity.HOUR, Granularity.DAY),
    Granularity.HOUR: (Granularity.DAY,),
    Granularity.DAY: (),
}


def tiles(query: UsageQuery) -> list[tuple[Granularity, datetime, datetime]]:
    """Buckets that cover exactly the ``query.granularity`` buckets starting in [start, end),
    as (granularity, first bucket start, end), coarsest in the middle."""
    start, end = query.start, ceil_to(query.end, query.granularity)
    coarser = _COARSER[query.granularity]
    if not coarser:
        return [(query.granularity, start, end)]
    middle = coarser[0]
    inner_start, inner_end = ceil_to(start, middle), floor_to(end, middle)
    if inner_start >= inner_end:
        return [(query.granularity, start, end)]
    edges = [(query.granularity, start, inner_start), (query.granularity, inner_end, end)]
    inner = tiles(UsageQuery(inner_start, inner_end, middle))
    return [tile for tile in (*inner, *edges) if tile[1] < tile[2]]


def _source(query: UsageQuery) -> Table:
    """The organization-wide buckets when the question names no key and no operation (a few
    rows per bucket), the key buckets otherwise."""
    if query.api_key_id is None and query.operation is None:
        return _organizations
    return _buckets


def _conditions(
    table: Table, caller: Caller, query: UsageQuery, *, coarsest: bool = False
) -> list[ColumnElement[bool]]:
    """The caller's buckets in the query's range: of its granularity (for a series), or the
    coarsest exact cover of the range (for sums)."""
    ranges = tiles(query) if coarsest else [(query.granularity, query.start, query.end)]
    conditions = [
        table.c.organization_id == caller.organization_id,
        or_(
            *(
                and_(
                    table.c.granularity == granularity.value,
                    table.c.bucket_start >= start,
                    table.c.bucket_start < end,
                )
                for granularity, start, end in ranges
            )
        ),
    ]
    if query.api_key_id is not None:
        conditions.append(table.c.api_key_id == query.api_key_id)
    if query.operation is not None:
        conditions.append(table.c.operation == query.operation)
    if query.outcome is not None:
        conditions.append(table.c.outcome == query.outcome.value)
    return conditions


def _sums(table: Table) -> tuple[Label[Any], Label[Any]]:
    requests = func.coalesce(func.sum(table.c["count"]), 0)
    valid = func.sum(case((table.c.outcome == Outcome.VALID.value, table.c["count"]), else_=0))
    return requests.label("requests"), func.coalesce(valid, 0).label("valid")


def _counts(row: Any) -> Counts:
    return Counts(requests=int(row.requests), valid=int(row.valid))


async def totals(session: AsyncSession, caller: Caller, query: UsageQuery) -> Counts:
    table = _source(query)
    statement = select(*_sums(table)).where(*_conditions(table, caller, query, coarsest=True))
    return _counts((await execute_core(session, statement)).one())


async def series(session: AsyncSession, caller: Caller, query: UsageQuery) -> list[SeriesPoint]:
    """One point per step in [start, end), zero where nothing happened."""
    table = _source(query)
    statement = (
        select(table.c.bucket_start, *_sums(table))
        .where(*_conditions(table, caller, query))
        .group_by(table.c.bucket_start)
    )
    rows = await execute_core(session, statement)
    found = {as_utc(row.bucket_start): _counts(row) for row in rows}
    step = timedelta(seconds=query.granularity.seconds)
    points: list[SeriesPoint] = []
    moment = query.start
    while moment < query.end:
        points.append(SeriesPoint(moment, found.get(moment, Counts())))
        moment += step
    return points


async def _breakdown(
    session: AsyncSession,
    caller: Caller,
    query: UsageQuery,
    table: Table,
    dimension: str,
    first: int | None,
) -> list[Share]:
    column = table.c[dimension]
    requests, valid = _sums(table)
    statement = (
        select(column.label("label"), requests, valid)
        .where(*_conditions(table, caller, query, coarsest=True))
        .group_by(column)
        .order_by(requests.desc(), column)
    )
    if first is not None:
        statement = statement.limit(first)
    return [Share(row.label, _counts(row)) for row in await execute_core(session, statement)]


def _per_key(query: UsageQuery) -> bool:
    """Whether each key's totals answer the question (it names no operation and no outcome)."""
    return query.operation is None and query.outcome is None


def _key_sums() -> tuple[Label[Any], Label[Any]]:
    return (
        func.coalesce(func.sum(_keys.c.requests), 0).label("requests"),
        func.coalesce(func.sum(_keys.c.valid), 0).label("valid"),
    )


async def by_key(
    session: AsyncSession, caller: Caller, query: UsageQuery, *, first: int
) -> list[Share]:
    """The keys used most in the range. Exact, so every key used in the range is summed: from
    each key's totals (a row per key and bucket of the range's coarsest cover) unless the
    question names an operation or an outcome."""
    if not _per_key(query):
        return await _breakdown(session, caller, query, _buckets, "api_key_id", first)
    requests, valid = _key_sums()
    statement = (
        select(_keys.c.api_key_id.label("label"), requests, valid)
        .where(*_conditions(_keys, caller, query, coarsest=True))
        .group_by(_keys.c.api_key_id)
        .order_by(requests.desc(), _keys.c.api_key_id)
        .limit(first)
    )
    return [Share(row.label, _counts(row)) for row in await execute_core(session, statement)]


async def by_operation(
    session: AsyncSession, caller: Caller, query: UsageQuery, *, first: int
) -> list[Share]:
    return await _breakdown(session, caller, query, _buckets, "operation", first)


async def by_outcome(session: AsyncSession, caller: Caller, query: UsageQuery) -> list[Share]:
    return await _breakdown(session, caller, query, _source(query), "outcome", None)


async def totals_by_key(
    session: AsyncSession, caller: Caller, query: UsageQuery, key_ids: Sequence[str]
) -> dict[str, Counts]:
    """Totals of many keys over one range in one statement (for the per-request DataLoader)."""
    table = _keys if _per_key(query) else _buckets
    statement = (
        select(table.c.api_key_id, *(_key_sums() if _per_key(query) else _sums(table)))
        .where(*_conditions(table, caller, query, coarsest=True), table.c.api_key_id.in_(key_ids))
        .group_by(table.c.api_key_id)
    )
    return {row.api_key_id: _counts(row) for row in await execute_core(session, statement)}
