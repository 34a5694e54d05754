"""SQLite through aiosqlite, with one trip to the driver's thread per statement.

aiosqlite runs every sqlite3 call on a thread of its own, and each call is a trip there and back:
two thread wake-ups, about 50 µs of CPU, more than SQLite takes to answer a page of keys.
SQLAlchemy's aiosqlite adapter makes four trips per statement that returns rows (open a cursor,
execute, fetch the rows, close the cursor; three for one that returns none) and two more to end
each unit of work (the session's commit, then the pool's rollback), even when it only read and
so never opened a transaction. A GraphQL read cost six trips.

Here a statement is one trip (the cursor is opened, executed, drained and closed on the driver's
thread, and its results kept), and commit and rollback skip the trip when no transaction is open,
where sqlite3 itself would do nothing. A read is one trip; a write is one per statement plus its
commit. SQLAlchemy's adapter still does everything else (pooling, isolation, errors):
the connection is its ``async_creator`` (:func:`engine_options`).

This leans on aiosqlite internals, as SQLAlchemy's own adapter does: ``_execute`` (queue a call
to the thread), ``_conn`` (the sqlite3 connection) and ``_thread``. tests/kit/test_sqlite.py counts
the trips and would catch a release that changed them.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from typing import Any, Self

import aiosqlite
from sqlalchemy import URL, make_url
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.pool import QueuePool

# What a statement left behind: description, rowcount, lastrowid and all of its rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
    """On the driver's thread: the whole life of one cursor."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql, () if parameters is None else parameters)
        return _drained(cursor)
    finally:
        cursor.close()


def _run_many(connection: sqlite3.Connection, sql: str, parameters: Any) -> _Outcome:
    cursor = connection.cursor()
    try:
        cursor.executemany(sql, parameters)
        return _drained(cursor)
    finally:
        cursor.close()


def _drained(cursor: sqlite3.Cursor) -> _Outcome:
    rows = cursor.fetchall() if cursor.description else []
    return cursor.description, cursor.rowcount, cursor.lastrowid, rows


class OneTripCursor:
    """The part of aiosqlite's cursor that SQLAlchemy's adapter uses, each statement one trip.

    All rows are fetched with the statement, also for a streamed result (``stream()``,
    ``yield_per``): fine for this service, whose queries are pages and aggregates. Note that
    ``cursor()`` returns it directly, where aiosqlite's returns an awaitable.

    Written against aiosqlite 0.22.1 / SQLAlchemy 2.1.9 (the adapter's use of the cursor).
    """

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque[Any] = deque()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> Self:
        self._keep(await self._connection.run(_run, sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Self:
        self._keep(await self._connection.run(_run_many, sql, parameters))
        return self

    def _keep(self, outcome: _Outcome) -> None:
        self.description, self.rowcount, self.lastrowid, rows = outcome
        self._rows = deque(rows)

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> Sequence[Any]:
        taken = list(self._rows)
        self._rows.clear()
        return taken

    async def __aiter__(self) -> AsyncIterator[Any]:
        while self._rows:
            yield self._rows.popleft()

    async def close(self) -> None:
        self._rows.clear()


class OneTripConnection(aiosqlite.Connection):
    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    async def run(self, function: Callable[..., _Outcome], *args: Any) -> _Outcome:
        """``function(sqlite3_connection, *args)`` on the driver's thread."""
        # Written against aiosqlite 0.22.1 (private ``_execute`` and ``_conn``).
        # aiosqlite's own cursors queue their calls the same way (as SQLAlchemy's adapter does
        # for isolation levels).
        result: _Outcome = await self._execute(  # type: ignore[no-untyped-call]
            function, self._conn, *args
        )
        return result

    async def commit(self) -> None:
        # With no transaction open (the unit of work only read), sqlite3's commit does nothing.
        if self.in_transaction:
            await super().commit()

    async def rollback(self) -> None:
        if self.in_transaction:
            await super().rollback()


def engine_options(database_url: str, *, pool_size: int, **connect_args: Any) -> dict[str, Any]:
    """``create_async_engine`` options for a SQLite URL: connections that make one trip per
    statement, and a pool of ``pool_size`` of them (no overflow). An in-memory database keeps
    SQLAlchemy's single shared connection."""
    url = make_url(database_url)
    options: dict[str, Any] = {"async_creator": _creator(url, connect_args)}
    if issubclass(SQLiteDialect_aiosqlite.get_pool_class(url), QueuePool):
        options.update(pool_size=pool_size, max_overflow=0)
    return options


def _creator(url: URL, connect_args: dict[str, Any]) -> Callable[[], Any]:
    """A :class:`OneTripConnection` to the database the URL names, opened as SQLAlchemy's
    aiosqlite dialect would open it."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(url)
    options.update(connect_args)

    async def connect() -> OneTripConnection:
        # Written against aiosqlite 0.22.1 (private ``_thread``) / SQLAlchemy 2.1.9.
        connection = OneTripConnection(partial(sqlite3.connect, *args, **options), 64)
        # As SQLAlchemy does for aiosqlite's connections: the thread must not keep the process
        # alive at exit.
        connection._thread.daemon = True
        await connection
        return connection

    return connect
