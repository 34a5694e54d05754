"""Bring a database to the latest schema with the Alembic migrations under app/migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock id ("keyhouse" in ASCII) serialising set-up work across processes.
SETUP_LOCK = 0x6B6579686F757365


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@asynccontextmanager
async def setup_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One process at a time in the block, on a connection of its own.

    Instances started together on a fresh PostgreSQL database (an orchestrator scaling out)
    would otherwise run the migrations at the same moment (the loser fails on duplicate
    tables) and each create a first organization. A session-level advisory lock, because
    migrations commit; it is released with the connection if the process dies. SQLite needs
    none: one file is not shared by instances, and it locks itself for writes.
    """
    async with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            yield connection
            return
        await connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": SETUP_LOCK})
        await connection.commit()
        try:
            yield connection
        finally:
            await connection.rollback()
            await connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": SETUP_LOCK})
            await connection.commit()


async def upgrade_to_head(engine: AsyncEngine) -> None:
    def upgrade(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "head")

    async with setup_lock(engine) as connection:
        await connection.run_sync(upgrade)
        await connection.commit()
