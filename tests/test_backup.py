"""``keyhouse backup`` while the service verifies keys, and ``keyhouse restore`` into an empty
database: the same keys are valid, revoked and expired there. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from app import cli
from app.auth.principal import Caller
from app.config import Settings
from app.keys.revocation import revoke_key
from app.kit.db import session_scope
from app.main import create_app
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.conftest import fresh_postgres_database
from tests.support import IssuedKey, Tenant, make_key, snapshot


def keyhouse(database_url: str, *args: str) -> Result:
    """``keyhouse ARGS`` in this process, on the database at ``database_url``."""
    return CliRunner().invoke(cli.app, list(args), env={"KEYHOUSE_DATABASE_URL": database_url})


@pytest.fixture
async def empty_database(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database of the same kind with nothing in it, not even the schema."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path}/restored.db"
        return
    # fresh_postgres_database runs its own event loop: entered and left in a thread.
    database: AbstractContextManager[str] = fresh_postgres_database()
    url = await asyncio.to_thread(database.__enter__)
    try:
        yield url
    finally:
        await asyncio.to_thread(database.__exit__, None, None, None)


async def _keys_in_every_state(runtime: Runtime, tenant: Tenant) -> dict[str, IssuedKey]:
    keys = {
        state: await make_key(runtime, tenant, state, expires_in_days=30)
        for state in ("VALID", "REVOKED", "EXPIRED")
    }
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await revoke_key(
            session,
            Caller(tenant.organization_id, runtime.catalogue.names()),
            keys["REVOKED"].id,
            broadcast=runtime.broadcast,
        )
        assert isinstance(revoked, ApiKey)
        expired = await session.get(ApiKey, keys["EXPIRED"].id)
        assert expired is not None
        expired.expires_at = datetime.now(UTC) - timedelta(days=1)
        session.add(expired)
    return keys


async def test_a_backup_taken_while_keys_are_verified_restores_the_same_keys(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    database_url: str,
    empty_database: str,
    tmp_path: Path,
) -> None:
    keys = await _keys_in_every_state(runtime, tenant)
    backup_file = tmp_path / "keyhouse.backup"
    answered: list[str] = []
    at_work = asyncio.Event()

    async def verify_and_flush() -> None:
        # The service at work meanwhile: cached verifications, and flushes writing their usage.
        while True:
            for key in keys.values():
                response = await client.post("/v1/keys/verify", json={"key": key.secret})
                answered.append(response.json()["code"])
            await runtime.recorder.flush()
            at_work.set()

    service = asyncio.create_task(verify_and_flush())
    try:
        # A backup of SQLite can finish before the first round: the backup starts after it.
        await asyncio.wait_for(at_work.wait(), timeout=30)
        done = await asyncio.to_thread(keyhouse, database_url, "backup", str(backup_file))
    finally:
        service.cancel()
    assert done.exit_code == 0, done.stderr
    assert "Backed up to" in done.stdout
    assert {"VALID", "REVOKED", "EXPIRED"} <= set(answered), answered

    restored = await asyncio.to_thread(keyhouse, empty_database, "restore", str(backup_file))

    assert restored.exit_code == 0, restored.stderr
    again = Runtime.create(Settings(database_url=empty_database))
    app = create_app(runtime=again)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://restored.test"
            ) as restored_client,
        ):
            for state, key in keys.items():
                response = await restored_client.post("/v1/keys/verify", json={"key": key.secret})
                assert response.json()["code"] == state, (state, response.json())
            admin = await restored_client.post("/v1/keys/verify", json={"key": tenant.admin_key})
            assert admin.json()["valid"] is True
    finally:
        await again.engine.dispose()


async def test_a_restore_into_a_database_with_tables_is_refused_and_changes_nothing(
    runtime: Runtime, tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    await make_key(runtime, tenant, "kept")
    backup_file = tmp_path / "keyhouse.backup"
    assert (
        await asyncio.to_thread(keyhouse, database_url, "backup", str(backup_file))
    ).exit_code == 0
    before = await snapshot(runtime)

    refused = await asyncio.to_thread(keyhouse, database_url, "restore", str(backup_file))

    assert refused.exit_code == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "already has tables" in refused.stderr
    assert "restore into an empty database" in refused.stderr
    assert await snapshot(runtime) == before


async def test_a_file_that_is_not_a_backup_is_refused_in_one_line(
    empty_database: str, tmp_path: Path
) -> None:
    backup_file = tmp_path / "keyhouse.backup"
    await asyncio.to_thread(backup_file.write_bytes, b"not a backup at all\n")

    refused = await asyncio.to_thread(keyhouse, empty_database, "restore", str(backup_file))

    assert refused.exit_code == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr


def test_a_backup_of_no_database_is_refused_and_writes_no_file(tmp_path: Path) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path}/missing.db"

    refused = keyhouse(missing, "backup", str(tmp_path / "out"))

    assert refused.exit_code == 1
    assert "no SQLite database at" in refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []
