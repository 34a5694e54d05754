"""Usage by organization over a period, for billing: read from the organization rollups
(``organization_usage``), never from single uses, and exact.

Exact means the period is covered by whole buckets: ``from`` and ``to`` fall on whole minutes,
and the figures are summed from the coarsest buckets that cover the period exactly (days in the
middle, hours and minutes at the edges), so a calendar month costs about thirty rows per
organization. Each granularity is kept for its retention; a period whose edges need buckets no
longer kept is refused, with what to ask instead.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.outcomes import Outcome
from app.config import Settings
from app.kit.db import execute_core
from app.kit.errors import BadUserInput
from app.kit.pagination import COUNT_LIMIT
from app.kit.timeutil import as_utc, utcnow
from app.models.usage import Counts, Granularity, OrganizationUsage
from app.usage.service import LATEST_AHEAD, MAX_SPAN, UsageQuery, floor_to, tiles, usage_retention

_rollups = OrganizationUsage.metadata.tables["organization_usage"]
Tile = tuple[Granularity, datetime, datetime]


@dataclass(frozen=True, slots=True)
class Period:
    """A checked period: [start, end) and the buckets that cover it exactly."""

    start: datetime
    end: datetime
    tiles: tuple[Tile, ...]


@dataclass(frozen=True, slots=True)
class OrganizationCounts:
    organization_id: str
    counts: Counts


@dataclass(frozen=True, slots=True)
class UsageCursor:
    """A position in the list, largest first: (requests, organization id)."""

    requests: int
    organization_id: str

    def encode(self) -> str:
        raw = f"{self.requests}|{self.organization_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> UsageCursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            requests, _, organization_id = raw.partition("|")
            position = cls(int(requests), organization_id)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            position = None
        if position is None or not position.organization_id:
            raise BadUserInput("'after' is not a cursor returned by this list.", argument="after")
        return position


def _aligned_to(moment: datetime) -> Granularity | None:
    """The coarsest granularity whose buckets start at ``moment``."""
    for granularity in (Granularity.DAY, Granularity.HOUR, Granularity.MINUTE):
        if floor_to(moment, granularity) == moment:
            return granularity
    return None


_FINER = {Granularity.DAY: 2, Granularity.HOUR: 1, Granularity.MINUTE: 0}


def checked_period(settings: Settings, start: datetime, end: datetime) -> Period:
    """The period's exact cover, or a clear BAD_USER_INPUT."""
    try:
        start, end = as_utc(start), as_utc(end)
    except OverflowError:
        raise BadUserInput(
            "'from' and 'to' must fall between the years 1 and 9999 once in UTC.",
            argument="from",
        ) from None
    if start >= end:
        raise BadUserInput("'from' must be before 'to'.", argument="from")
    now = utcnow()
    if end > now + LATEST_AHEAD:
        raise BadUserInput(
            f"'to' can be at most {LATEST_AHEAD.days} days after now.", argument="to"
        )
    if end - start > MAX_SPAN[Granularity.DAY]:
        raise BadUserInput(
            f"Usage can be asked for at most {MAX_SPAN[Granularity.DAY].days} days at a time.",
            argument="to",
        )
    edges = [(_aligned_to(start), "from"), (_aligned_to(end), "to")]
    for granularity, name in edges:
        if granularity is None:
            raise BadUserInput(
                f"'{name}' must fall on a whole minute (UTC), so that the figures are exact.",
                argument=name,
            )
    finest = min((g for g, _ in edges if g is not None), key=_FINER.__getitem__)
    cover = tuple(tiles(UsageQuery(start, end, finest)))
    retention = usage_retention(settings)
    for granularity, tile_start, _ in cover:
        earliest = floor_to(now - retention[granularity], granularity)
        if tile_start < earliest:
            raise BadUserInput(
                f"{granularity.value} usage is kept until {earliest.isoformat()}: a period "
                f"reaching further back must start and end on {_coarser_edge(granularity)} "
                "(UTC).",
                argument="from",
            )
    return Period(start, end, cover)


def _coarser_edge(granularity: Granularity) -> str:
    return "whole days" if granularity is not Granularity.MINUTE else "whole hours or days"


def _in_period(period: Period) -> Any:
    return or_(
        *(
            and_(
                _rollups.c.granularity == granularity.value,
                _rollups.c.bucket_start >= start,
                _rollups.c.bucket_start < end,
            )
            for granularity, start, end in period.tiles
        )
    )


_requests: ColumnElement[Any] = func.sum(_rollups.c["count"])
_valid = func.coalesce(
    func.sum(case((_rollups.c.outcome == Outcome.VALID.value, _rollups.c["count"]), else_=0)), 0
)


async def usage_by_organization(
    session: AsyncSession, period: Period, *, first: int | None, after: UsageCursor | None = None
) -> list[OrganizationCounts]:
    """Organizations with uses in the period, largest first (ties by id); ``first`` + 1 rows
    at most, so the caller can tell whether there is a next page."""
    statement = (
        select(_rollups.c.organization_id, _requests.label("requests"), _valid.label("valid"))
        .where(_in_period(period))
        .group_by(_rollups.c.organization_id)
        .order_by(_requests.desc(), _rollups.c.organization_id)
    )
    if after is not None:
        statement = statement.having(
            or_(
                _requests < after.requests,
                and_(
                    _requests == after.requests,
                    _rollups.c.organization_id > after.organization_id,
                ),
            )
        )
    if first is not None:
        statement = statement.limit(first + 1)
    rows = await execute_core(session, statement)
    return [
        OrganizationCounts(row.organization_id, Counts(int(row.requests), int(row.valid)))
        for row in rows
    ]


async def count_organizations_with_usage(session: AsyncSession, period: Period) -> int:
    """How many organizations had uses in the period, up to COUNT_LIMIT."""
    matching = (
        select(literal(1))
        .select_from(_rollups)
        .where(_in_period(period))
        .group_by(_rollups.c.organization_id)
        .limit(COUNT_LIMIT)
    )
    statement = select(func.count()).select_from(matching.subquery())
    count: int = (await execute_core(session, statement)).scalar_one()
    return count
