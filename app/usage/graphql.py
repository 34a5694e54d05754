"""GraphQL for usage analytics (needs ``read:analytics``).

Each field of ``Usage`` runs one aggregate over the buckets, and only when it is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry

from app.auth.outcomes import Outcome
from app.graphql.context import Info
from app.graphql.permissions import needs
from app.graphql.types import UsageCounts
from app.keys import loaders
from app.keys.graphql import ApiKeyType
from app.keys.scopes import READ_ANALYTICS, READ_API_KEYS
from app.kit.timeutil import as_utc
from app.models.usage import Granularity
from app.usage import service


@strawberry.enum(description="What verification answered for a use of a known key.")
class UsageOutcome(Enum):
    VALID = "VALID"
    RATE_LIMITED = "RATE_LIMITED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    SUPERSEDED = "SUPERSEDED"
    DISABLED = "DISABLED"
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    CREDITS_EXHAUSTED = "CREDITS_EXHAUSTED"
    ORGANIZATION_SUSPENDED = "ORGANIZATION_SUSPENDED"


@strawberry.type
class UsagePoint:
    start: datetime
    requests: int
    valid: int
    rejected: int


@strawberry.type
class KeyUsage:
    api_key_id: strawberry.Private[str]
    requests: int
    valid: int
    rejected: int

    @strawberry.field(
        extensions=needs(READ_API_KEYS),
        description="The key's details, for a caller that may read keys (read:api_keys).",
    )
    async def api_key(self, info: Info) -> ApiKeyType | None:
        from app.keys.graphql import ApiKeyType

        row = await info.context.loader(loaders.api_keys).load(self.api_key_id)
        return None if row is None else ApiKeyType.of(row, info.context)

    @strawberry.field(description="When the key last authenticated a request.")
    async def last_used_at(self, info: Info) -> datetime | None:
        # No key row here (a usage figure): the key's last_used_at through the request's loader.
        return await info.context.loader(loaders.last_used).load(self.api_key_id)


@strawberry.type
class OperationUsage:
    operation: str
    requests: int
    valid: int
    rejected: int


@strawberry.type
class OutcomeUsage:
    outcome: UsageOutcome
    requests: int


@strawberry.type(description="Usage of your organization's keys over [from, to).")
class Usage:
    query: strawberry.Private[service.UsageQuery]

    @strawberry.field
    async def totals(self, info: Info) -> UsageCounts:
        async with info.context.db() as session:
            counts = await service.totals(session, info.context.caller, self.query)
        return UsageCounts.of(counts)

    @strawberry.field(description="One point per step, zero-filled, UTC.")
    async def series(self, info: Info) -> list[UsagePoint]:
        async with info.context.db() as session:
            points = await service.series(session, info.context.caller, self.query)
        return [
            UsagePoint(
                start=point.start,
                requests=point.counts.requests,
                valid=point.counts.valid,
                rejected=point.counts.rejected,
            )
            for point in points
        ]

    @strawberry.field(description="The most used keys first (at most 100).")
    async def by_key(self, info: Info, first: int = 10) -> list[KeyUsage]:
        service.check_breakdown_size(first)
        async with info.context.db() as session:
            shares = await service.by_key(session, info.context.caller, self.query, first=first)
        return [
            KeyUsage(
                api_key_id=share.label,
                requests=share.counts.requests,
                valid=share.counts.valid,
                rejected=share.counts.rejected,
            )
            for share in shares
        ]

    @strawberry.field(description="The most used operations first (at most 100).")
    async def by_operation(self, info: Info, first: int = 10) -> list[OperationUsage]:
        service.check_breakdown_size(first)
        async with info.context.db() as session:
            shares = await service.by_operation(
                session, info.context.caller, self.query, first=first
            )
        return [
            OperationUsage(
                operation=share.label,
                requests=share.counts.requests,
                valid=share.counts.valid,
                rejected=share.counts.rejected,
            )
            for share in shares
        ]

    @strawberry.field
    async def by_outcome(self, info: Info) -> list[OutcomeUsage]:
        async with info.context.db() as session:
            shares = await service.by_outcome(session, info.context.caller, self.query)
        return [
            OutcomeUsage(outcome=UsageOutcome(share.label), requests=share.counts.requests)
            for share in shares
        ]


def series_points(_series_args: Mapping[str, Any], usage_args: Mapping[str, Any]) -> int:
    """How many points a ``series`` answers, for its cost: one per step of the ``usage`` range,
    at most as many as a range may span (a longer one is refused with its own message)."""
    start, end = usage_args.get("from"), usage_args.get("to")
    granularity = usage_args.get("granularity")
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        return 0
    if not isinstance(granularity, Granularity):
        return 0
    try:
        first = as_utc(start).timestamp()
        span = min(as_utc(end) - as_utc(start), service.MAX_SPAN[granularity]).total_seconds()
    except OverflowError:
        return 0  # past year 9999 in UTC: the resolver refuses the range
    step = granularity.seconds
    return max(0, math.ceil((first + span) / step) - math.floor(first / step))


# The cost model's sizes of lists that know their own (app/graphql/cost.py).
LIST_SIZES = {"Usage.series": series_points}


def usage_query(
    info: Info,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    *,
    api_key_id: str | None = None,
    operation: str | None = None,
    outcome: UsageOutcome | None = None,
) -> service.UsageQuery:
    """Checks the range against the span limits and what is retained (BAD_USER_INPUT)."""
    return service.checked_query(
        info.context.runtime.settings,
        start,
        end,
        granularity,
        api_key_id=api_key_id,
        operation=operation,
        outcome=None if outcome is None else Outcome(outcome.value),
    )


@strawberry.type
class Query:
    @strawberry.field(
        extensions=needs(READ_ANALYTICS),
        description="How your organization's keys were used over [from, to).",
    )
    def usage(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        granularity: Granularity,
        api_key_id: strawberry.ID | None = None,
        operation: str | None = None,
        outcome: UsageOutcome | None = None,
    ) -> Usage:
        return Usage(
            query=usage_query(
                info,
                from_,
                to,
                granularity,
                api_key_id=None if api_key_id is None else str(api_key_id),
                operation=operation,
                outcome=outcome,
            )
        )
