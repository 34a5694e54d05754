"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL and Redis tests skip with a reason when the server does not answer (a laptop without
them), and fail instead when KEYHOUSE_TEST_REQUIRE_SERVICES=1 (set by .ci/run).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from app.config import Settings
from app.kit.db import create_engine
from app.main import create_app
from app.migrate import upgrade_to_head
from app.runtime import Runtime
from tests.support import Tenant, empty_database, make_tenant

POSTGRES_URL = os.environ.get(
    "KEYHOUSE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KEYHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("KEYHOUSE_TEST_REQUIRE_SERVICES") == "1"
# The server secret of every test deployment, in the environment so that every Settings() and
# every keyhouse process started by a test has it (PostgreSQL requires one: see
# app/kit/server_secret.py).
SERVER_SECRET = "5e" * 32
os.environ["KEYHOUSE_SECRET_KEY"] = SERVER_SECRET
# No test deployment in this process delivers webhooks in the background: a delivery is a write
# that would race with the snapshots and statement counts of the tests. Webhook tests run the
# worker by hand; a `keyhouse serve` a test starts delivers as usual (tests/processes.py leaves
# KEYHOUSE_* settings out of its environment).
os.environ["KEYHOUSE_DELIVER_WEBHOOKS"] = "false"

# Property-based tests (tests/fuzzing.py): a fixed, small number of examples per property, drawn
# the same way on every run, so CI is fast and reproducible. KEYHOUSE_FUZZ_EXAMPLES=N runs N per
# property, drawn afresh each run, for a deeper search on a workstation.
FUZZ_EXAMPLES = os.environ.get("KEYHOUSE_FUZZ_EXAMPLES")
hypothesis_settings.register_profile(
    "keyhouse",
    max_examples=int(FUZZ_EXAMPLES or 50),
    derandomize=FUZZ_EXAMPLES is None,
    database=None,
    print_blob=True,
    # A request with a database behind it takes milliseconds, a huge value more: no deadline.
    deadline=None,
    # Each property runs all of its examples against one deployment (its fixtures), comparing
    # the database before and after each example.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
hypothesis_settings.load_profile("keyhouse")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _answers(host, port):
        return
    reason = f"{name} does not answer on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (KEYHOUSE_TEST_REQUIRE_SERVICES=1: this must not be skipped)")
    pytest.skip(reason)


def require_postgres() -> None:
    require_server("PostgreSQL", "127.0.0.1", 5432)


def require_redis() -> None:
    require_server("Redis", "127.0.0.1", 6379)


async def _admin(url: str, *statements: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        for statement in statements:
            await connection.execute(text(statement))
    await engine.dispose()


async def _create_postgres(url: str) -> None:
    engine = create_engine(url)
    await upgrade_to_head(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating every time)."""
    path = tmp_path_factory.mktemp("template") / "keyhouse.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")

    async def migrate() -> None:
        await upgrade_to_head(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """An empty database of its own on the PostgreSQL server (created from ``test``), so that
    concurrent runs and other tests never touch its tables; dropped on exit."""
    require_postgres()
    name = f"keyhouse_test_{os.getpid()}_{secrets.token_hex(3)}"
    base, _, _ = POSTGRES_URL.rpartition("/")
    asyncio.run(_admin(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_migrated() -> Iterator[str]:
    """A migrated database of this test run's own, shared by its PostgreSQL tests."""
    with fresh_postgres_database() as url:
        asyncio.run(_create_postgres(url))
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "keyhouse.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_migrated")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Background flushes and deliveries would make statement counts and snapshots racy: tests
    # flush, and run the webhook worker, by hand.
    return Settings(
        database_url=database_url, usage_flush_interval_seconds=3600, deliver_webhooks=False
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime.create(settings)
    await empty_database(runtime)
    yield runtime
    await runtime.engine.dispose()


@pytest.fixture
async def app(runtime: Runtime) -> AsyncIterator[FastAPI]:
    application = create_app(runtime=runtime)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keyhouse.test") as client:
        yield client


@pytest.fixture
async def tenant(runtime: Runtime) -> Tenant:
    """An organization and its admin key (every scope)."""
    return await make_tenant(runtime, "Acme")


@pytest.fixture
async def other_tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime, "Globex")


@pytest.fixture
def redis_url() -> str:
    require_redis()
    return REDIS_URL
