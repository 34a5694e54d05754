"""The usage feature's DataLoaders, and the figures it lends the keys feature (ApiKey.usage)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from strawberry.dataloader import DataLoader

from app.graphql.context import Context
from app.models.usage import Counts, Granularity
from app.usage import service
from app.usage.service import UsageQuery


def key_usage(context: Context) -> DataLoader[tuple[str, UsageQuery], Counts]:
    """Keys' usage over a range: one statement per distinct range asked for (a page of keys
    shares one range)."""

    async def load(wanted: Sequence[tuple[str, UsageQuery]]) -> list[Counts]:
        by_query: dict[UsageQuery, list[str]] = {}
        for key_id, query in wanted:
            by_query.setdefault(query, []).append(key_id)
        found: dict[tuple[str, UsageQuery], Counts] = {}
        async with context.db() as session:
            for query, key_ids in by_query.items():
                totals = await service.totals_by_key(session, context.caller, query, key_ids)
                for key_id in key_ids:
                    found[(key_id, query)] = totals.get(key_id, Counts())
        return [found[item] for item in wanted]

    return DataLoader(load_fn=load)


async def usage_of_key(
    context: Context, key_id: str, start: datetime, end: datetime, granularity: Granularity
) -> Counts:
    """A key's usage over [start, end): the range checked as every usage query is, then loaded
    with the request's other keys (the view hands this to the context as ``key_usage``)."""
    query = service.checked_query(context.runtime.settings, start, end, granularity)
    return await context.loader(key_usage).load((key_id, query))
