"""Engine, sessions and the unit of work.

Services only flush; whoever opened the session (a GraphQL request, a CLI command) commits it
through :func:`session_scope`, and work that must wait for the commit (cache invalidation after a
revocation) is queued with :func:`after_commit`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import DateTime, Executable, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, Result
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from app.config import DEFAULT_SQLITE_POOL_SIZE
from app.kit import sqlite
from app.kit.errors import Unavailable
from app.kit.timeutil import as_utc

SessionMaker = async_sessionmaker[AsyncSession]
AfterCommit = Callable[[], Awaitable[None]]

# asyncpg waits a minute by default for a server that does not answer; a request waiting on a
# lost database should be told so within a few seconds instead.
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5.0

# Failures that say the database could not be reached, not that it refused a statement. A
# refused connection surfaces as the socket's own error; a connection lost mid-statement as a
# DBAPIError that invalidated the connection; a server starting or stopping as asyncpg's errors.
_OUTAGES = (
    OSError,
    TimeoutError,
    sa_exc.TimeoutError,  # no pooled connection came free in time
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
# SQLite says OperationalError for a bad statement too; these messages mean the file itself
# cannot be used (another process holds it past the busy timeout, or the disk failed).
_SQLITE_OUTAGES = ("database is locked", "unable to open database file", "disk I/O error")


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` means the database did not answer (rather than refused a statement)."""
    if not isinstance(error, sa_exc.DBAPIError):
        return isinstance(error, _OUTAGES)
    if error.connection_invalidated:
        return True
    driver_error = error.orig
    if isinstance(driver_error, sqlite3.OperationalError):
        return any(message in str(driver_error) for message in _SQLITE_OUTAGES)
    # SQLAlchemy's asyncpg adapter raises its own error from asyncpg's.
    return isinstance(driver_error, _OUTAGES) or isinstance(
        getattr(driver_error, "__cause__", None), _OUTAGES
    )


@contextmanager
def outages_as_unavailable() -> Iterator[None]:
    """Turns a database outage inside the block into :class:`Unavailable`, which every entry
    point answers as HTTP 503 with ``Retry-After`` (the cause stays chained for the log)."""
    try:
        yield
    except Exception as error:
        if is_outage(error):
            raise Unavailable("The database is unavailable; retry in a few seconds.") from error
        raise


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (SQLite has no time zones) and always returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def create_engine(
    database_url: str, *, sqlite_pool_size: int = DEFAULT_SQLITE_POOL_SIZE
) -> AsyncEngine:
    # hide_parameters: a failed statement's error (logged with its traceback) never shows its
    # parameters, which hold key hashes and what requests sent.
    if database_url.startswith("sqlite"):
        # aiosqlite logs every statement with its parameters (key hashes among them) at DEBUG.
        # Like SQLAlchemy for its own loggers: quiet unless the operator configured it.
        driver_logger = logging.getLogger("aiosqlite")
        if driver_logger.level == logging.NOTSET:
            driver_logger.setLevel(logging.INFO)
        engine = create_async_engine(
            database_url,
            hide_parameters=True,
            **sqlite.engine_options(database_url, pool_size=sqlite_pool_size, timeout=30),
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers (verification lookups) proceed while a writer commits.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "savepoint")
        def _begin_before_savepoint(connection: Any, _name: str) -> None:
            # The sqlite3 driver opens a transaction before DML only, not before SAVEPOINT: a
            # savepoint that comes first is a transaction of its own, and releasing it commits,
            # whatever the enclosing unit of work does afterwards (a key would survive a failed
            # createApiKey). Open the transaction first.
            if not connection.connection.driver_connection.in_transaction:
                connection.exec_driver_sql("BEGIN")

        return engine
    return create_async_engine(
        database_url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
    )


def create_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def execute_core(
    session: AsyncSession, statement: Executable, values: Mapping[str, Any] | None = None
) -> Result[*tuple[Any, ...]]:
    """Run a Core statement (aggregates, several labelled columns) in the session's transaction,
    with ``values`` for its bound parameters.

    sqlmodel's ``exec`` is typed for its own selects only, and its ``execute`` warns.
    """
    connection = await session.connection()
    return await connection.execute(statement, values)


def after_commit(session: AsyncSession, hook: AfterCommit) -> None:
    """Run ``hook`` once the session's transaction has committed (never if it rolls back)."""
    session.info.setdefault("after_commit", []).append(hook)


async def commit(session: AsyncSession) -> None:
    await session.commit()
    hooks: list[AfterCommit] = session.info.pop("after_commit", [])
    for hook in hooks:
        await hook()


async def rollback(session: AsyncSession) -> None:
    session.info.pop("after_commit", None)
    await session.rollback()


@asynccontextmanager
async def session_scope(sessionmaker: SessionMaker) -> AsyncIterator[AsyncSession]:
    """A unit of work: commits when the block succeeds, rolls back when it raises."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await rollback(session)
            raise
        await commit(session)
