"""The per-request GraphQL context and the ``Info`` alias resolvers take."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from strawberry.dataloader import DataLoader

from app.auth.principal import Caller
from app.keys import service as keys_service
from app.kit.db import commit, outages_as_unavailable, rollback
from app.kit.errors import AppError
from app.models.keys import ApiKey
from app.runtime import Runtime
from app.usage import service as usage_service
from app.usage.service import Counts, UsageQuery


class NotAuthenticated(AppError):
    code = "UNAUTHORIZED"


@dataclass
class Context:
    request: Request
    response: Response
    runtime: Runtime
    _caller: Caller | None = None
    # The operation that runs, as a usage label; set once the document is parsed and validated
    # (app/graphql_inputs.py). None while unknown, and for requests that never execute.
    operation: str | None = None
    _session: AsyncSession | None = None
    # Resolvers of one query run concurrently, but an AsyncSession must not be used by two
    # coroutines at once: database work of one request takes turns.
    _session_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used_at: DataLoader[str, datetime | None] = field(init=False)
    api_key: DataLoader[str, ApiKey | None] = field(init=False)
    key_usage: DataLoader[tuple[str, UsageQuery], Counts] = field(init=False)

    def __post_init__(self) -> None:
        self.last_used_at = DataLoader(load_fn=self._load_last_used_at)
        self.api_key = DataLoader(load_fn=self._load_api_keys)
        self.key_usage = DataLoader(load_fn=self._load_key_usage)

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            raise NotAuthenticated("This request is not authenticated.")
        return self._caller

    def authenticate(self, caller: Caller) -> None:
        self._caller = caller

    @asynccontextmanager
    async def db(self) -> AsyncIterator[AsyncSession]:
        async with self._session_lock:
            if self._session is None:
                self._session = self.runtime.sessionmaker()
            # A resolver that meets a database outage answers UNAVAILABLE, never INTERNAL.
            with outages_as_unavailable():
                yield self._session

    async def finish(self, *, succeeded: bool) -> None:
        """End the request's unit of work: commit what it did, or roll all of it back."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            with outages_as_unavailable():
                if succeeded:
                    await commit(session)
                else:
                    await rollback(session)
        finally:
            await session.close()

    def latest_use(self, key_id: str, stored: datetime | None) -> datetime | None:
        """A key's ``lastUsedAt``: the ``last_used_at`` its row holds, or a newer use this
        instance has not flushed yet."""
        pending = self.runtime.recorder.pending_last_used(key_id)
        if pending is None or (stored is not None and stored >= pending):
            return stored
        return pending

    async def _load_last_used_at(self, key_ids: Sequence[str]) -> list[datetime | None]:
        async with self.db() as session:
            stored = await keys_service.last_used_by_id(session, key_ids)
        return [self.latest_use(key_id, stored.get(key_id)) for key_id in key_ids]

    async def _load_api_keys(self, key_ids: Sequence[str]) -> list[ApiKey | None]:
        async with self.db() as session:
            found = await keys_service.get_keys(session, self.caller, key_ids)
        return [found.get(key_id) for key_id in key_ids]

    async def _load_key_usage(self, wanted: Sequence[tuple[str, UsageQuery]]) -> list[Counts]:
        # One statement per distinct range asked for: a page of keys shares one range.
        by_query: dict[UsageQuery, list[str]] = {}
        for key_id, query in wanted:
            by_query.setdefault(query, []).append(key_id)
        found: dict[tuple[str, UsageQuery], Counts] = {}
        async with self.db() as session:
            for query, key_ids in by_query.items():
                totals = await usage_service.totals_by_key(session, self.caller, query, key_ids)
                for key_id in key_ids:
                    found[(key_id, query)] = totals.get(key_id, Counts())
        return [found[item] for item in wanted]


Info = strawberry.Info[Context, None]
