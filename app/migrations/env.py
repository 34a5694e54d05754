"""Alembic environment. keyhouse runs migrations itself (``keyhouse init``/``serve``) on a
connection it passes in; ``alembic`` on the command line uses KEYHOUSE_DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.config import Settings
from app.kit.db import create_engine
from app.models import metadata

config = context.config


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_engine(Settings().database_url)
    async with engine.connect() as connection:
        await connection.run_sync(run_with)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("keyhouse migrations run online only")

shared = config.attributes.get("connection")
if shared is not None:
    run_with(shared)
else:
    asyncio.run(run_online())
