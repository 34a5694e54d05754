"""The per-request GraphQL context and the ``Info`` alias resolvers take.

The context knows no feature: each feature keeps its DataLoaders beside its service
(``loaders.py``) and asks the context for the request's instance (:meth:`Context.loader`). The
one thing keys needs from usage, a key's usage figures, comes through :attr:`Context.key_usage`,
which the view fills in (app/graphql/view.py), so that keys never imports usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from strawberry.dataloader import DataLoader

from app.auth.principal import Caller, Operator
from app.kit.db import commit, outages_as_unavailable, rollback
from app.kit.errors import AppError
from app.kit.logs import ORGANIZATION_ID
from app.models.usage import Counts, Granularity
from app.runtime import Runtime

K = TypeVar("K")
V = TypeVar("V")
# A key's usage over [start, end) in buckets of a granularity (ApiKey.usage), checked and loaded
# by the usage feature (app/usage/loaders.py).
KeyUsageOf = Callable[["Context", str, datetime, datetime, Granularity], Awaitable[Counts]]


class NotAuthenticated(AppError):
    code = "UNAUTHORIZED"


class Forbidden(AppError):
    code = "FORBIDDEN"


OPERATOR_ON_ORGANIZATION_FIELD = (
    "This field answers for an organization, with one of its keys; an operator key reaches "
    "the operator fields only (organizations, createOrganization, organizationsUsage...)."
)


@dataclass
class Context:
    request: Request
    response: Response
    runtime: Runtime
    _caller: Caller | None = None
    # The platform's operator, when the request came with an operator key (then no caller).
    _operator: Operator | None = None
    # The operation that runs, as a usage label; set once the document is parsed and validated
    # (app/graphql/inputs.py). None while unknown, and for requests that never execute.
    operation: str | None = None
    # A query writes nothing: its unit of work ends without a commit (one round trip fewer).
    read_only: bool = False
    _session: AsyncSession | None = None
    # Resolvers of one query run concurrently, but an AsyncSession must not be used by two
    # coroutines at once: database work of one request takes turns.
    _session_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    key_usage: KeyUsageOf | None = None
    # The request's DataLoaders, one per factory: made on first use.
    _loaders: dict[object, DataLoader[Any, Any]] = field(default_factory=dict)

    def loader(self, factory: Callable[[Context], DataLoader[K, V]]) -> DataLoader[K, V]:
        """This request's DataLoader made by ``factory`` (a feature's ``loaders.py``): every
        resolver of the request that asks for it shares one, so its loads are batched."""
        made = self._loaders.get(factory)
        if made is None:
            made = self._loaders[factory] = factory(self)
        return made

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            if self._operator is not None:
                raise Forbidden(OPERATOR_ON_ORGANIZATION_FIELD)
            raise NotAuthenticated("This request is not authenticated.")
        return self._caller

    @property
    def operator(self) -> Operator | None:
        return self._operator

    def authenticate(self, caller: Caller) -> None:
        self._caller = caller
        ORGANIZATION_ID.set(caller.organization_id)  # the request's log lines name it

    def authenticate_operator(self, operator: Operator) -> None:
        self._operator = operator

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
                if succeeded and not self.read_only:
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


Info = strawberry.Info[Context, None]
