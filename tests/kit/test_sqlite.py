"""SQLite through aiosqlite: one trip to the driver's thread per statement (app/kit/sqlite.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.config import Settings
from app.kit.db import create_engine
from app.kit.sqlite import OneTripConnection, OneTripCursor
from tests.support import Tenant, gql


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every call queued to a driver thread (aiosqlite's one way to its thread)."""
    queued: list[str] = []
    original = OneTripConnection._execute

    async def counting(self: OneTripConnection, function: Any, *args: Any, **kwargs: Any) -> Any:
        queued.append(getattr(function, "__name__", None) or type(function).__name__)
        return await original(self, function, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(OneTripConnection, "_execute", counting)
    return queued


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield engine
    await engine.dispose()


async def test_a_read_is_one_trip_with_no_commit_or_rollback_trip(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the pool's connection is open and warm
    trips.clear()

    async with engine.begin() as connection:  # commits at the end, then the pool rolls back
        rows = (await connection.execute(text("SELECT id, v FROM t"))).all()

    assert rows == []
    assert trips == ["_run"]


async def test_a_write_is_one_trip_per_statement_plus_its_commit(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    trips.clear()

    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
        await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}])

    assert trips == ["_run", "_run_many", "commit"]
    async with engine.connect() as connection:
        values = (await connection.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all()
    assert values == ["a", "b", "c"]


async def test_a_rolled_back_write_leaves_nothing(engine: AsyncEngine, trips: list[str]) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('gone')"))
        await connection.rollback()
        assert "rollback" in trips
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 0


async def test_rowcount_and_lastrowid_reach_sqlalchemy(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        inserted = await connection.execute(text("INSERT INTO t (v) VALUES ('x')"))
        assert inserted.lastrowid == 1
        await connection.execute(text("INSERT INTO t (v) VALUES ('y')"))
        updated = await connection.execute(text("UPDATE t SET v = 'z'"))
        assert updated.rowcount == 2


async def test_a_failing_statement_raises_and_the_connection_stays_usable(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as connection:
        with pytest.raises(OperationalError, match="no such table"):
            await connection.execute(text("SELECT * FROM missing"))
        await connection.rollback()
        assert (await connection.execute(text("SELECT 2"))).scalar_one() == 2


async def test_cursor_hands_out_its_rows_once(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, OneTripConnection)
        cursor = driver.cursor()
        assert isinstance(cursor, OneTripCursor)
        await cursor.execute("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3")

        assert [column[0] for column in cursor.description] == ["1"]
        assert await cursor.fetchone() == (1,)
        assert await cursor.fetchmany(1) == [(2,)]
        assert await cursor.fetchall() == [(3,)]
        assert await cursor.fetchone() is None
        await cursor.close()


# PostgreSQL (asyncpg) has no driver thread: this is about SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_graphql_read_is_one_trip(
    client: httpx.AsyncClient, tenant: Tenant, trips: list[str]
) -> None:
    query = "{ apiKeys(first: 50) { nodes { name lastUsedAt } } }"
    await gql(client, query, key=tenant.admin_key)  # the key is cached, the pool warm
    trips.clear()

    answer = await gql(client, query, key=tenant.admin_key)

    assert answer.errors == []
    assert [node["name"] for node in answer.data["apiKeys"]["nodes"]] == ["admin"]
    assert trips == ["_run"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_page_with_its_total_count_is_still_one_trip(
    client: httpx.AsyncClient, tenant: Tenant, trips: list[str]
) -> None:
    query = "{ apiKeys(first: 50) { totalCount nodes { name } } }"
    await gql(client, query, key=tenant.admin_key)
    trips.clear()

    answer = await gql(client, query, key=tenant.admin_key)

    assert answer.errors == []
    assert answer.data["apiKeys"]["totalCount"] == 1
    assert trips == ["_run"]  # the count rides with the page, as a subquery


async def test_a_file_database_has_a_small_fixed_pool(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", sqlite_pool_size=3)
    try:
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == 3
        assert pool._max_overflow == 0  # no connections (threads) beyond those three
    finally:
        await engine.dispose()


async def test_an_in_memory_database_works_on_its_one_shared_connection() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE m (v TEXT)"))
            await connection.execute(text("INSERT INTO m VALUES ('kept')"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT v FROM m"))).scalar_one() == "kept"
    finally:
        await engine.dispose()


async def test_a_streamed_result_arrives_whole(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')"))
    async with engine.connect() as connection:
        streamed = await connection.stream(text("SELECT v FROM t ORDER BY id"))
        assert [row.v async for row in streamed] == ["a", "b", "c"]


def test_the_sqlite_pool_has_at_least_two_connections() -> None:
    # `keyhouse serve` holds one connection (its setup lock) while it bootstraps with another.
    with pytest.raises(ValidationError, match="sqlite_pool_size"):
        Settings(sqlite_pool_size=1)
    assert Settings(sqlite_pool_size=2).sqlite_pool_size == 2
