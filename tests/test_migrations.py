"""The Alembic migrations build exactly the schema the models describe, on both databases, and
can be undone."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from app.kit.db import create_engine
from app.migrate import alembic_config, upgrade_to_head
from app.models import metadata


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)  # already at head: applying again changes nothing
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []


async def test_migrations_downgrade_to_empty_and_upgrade_again(database_url: str) -> None:
    # The database is this test run's own (see conftest), and it is left at head again.
    engine = create_engine(database_url)

    def downgrade(connection: Connection) -> list[str]:
        command.downgrade(alembic_config(connection), "base")
        return sorted(inspect(connection).get_table_names())

    try:
        async with engine.begin() as connection:
            remaining = await connection.run_sync(downgrade)
        assert remaining == ["alembic_version"]
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()
