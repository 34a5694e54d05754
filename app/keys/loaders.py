"""The keys feature's DataLoaders: a page of N rows that each name a key costs one statement.

A resolver asks the request's context for one (``info.context.loader(api_keys)``); each
factory here is made at most once per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from strawberry.dataloader import DataLoader

from app.graphql.context import Context
from app.keys import repository
from app.models.keys import ApiKey


def api_keys(context: Context) -> DataLoader[str, ApiKey | None]:
    """Keys of the caller's organization by id (None for any other id)."""

    async def load(key_ids: Sequence[str]) -> list[ApiKey | None]:
        async with context.db() as session:
            found = await repository.get_keys(session, context.caller, key_ids)
        return [found.get(key_id) for key_id in key_ids]

    return DataLoader(load_fn=load)


def last_used(context: Context) -> DataLoader[str, datetime | None]:
    """Keys' ``lastUsedAt``, for rows that do not carry their key's row (usage figures)."""

    async def load(key_ids: Sequence[str]) -> list[datetime | None]:
        async with context.db() as session:
            stored = await repository.last_used_by_id(session, key_ids)
        return [context.latest_use(key_id, stored.get(key_id)) for key_id in key_ids]

    return DataLoader(load_fn=load)
