"""Backups of keyhouse's database, taken while it serves, and restored into an empty database.

SQLite: SQLite's own online backup, a consistent copy of the file made page by page while the
service goes on reading and writing it. PostgreSQL: ``pg_dump``'s custom format (one snapshot,
taken in a transaction of its own) and ``pg_restore``, the PostgreSQL client tools (Debian's
``postgresql-client``, of the server's major version or newer).

A restore goes into an empty database only (it never merges into live data), in one
transaction, and then migrates the database to this version's schema: a backup made by an
older keyhouse restores into a newer one.

The server secret is not in the database: keep ``KEYHOUSE_SECRET_KEY`` (or, on SQLite, the
``.secret`` file beside the database) with the backups. Without it, keys still verify (they are
stored as SHA-256 digests); only the idempotency records of the last 24 hours no longer open.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import URL, Connection, make_url

from app.kit.db import create_engine
from app.migrate import upgrade_to_head


class BackupFailed(Exception):
    """A backup or restore that could not be made; the message is one line for the operator."""


def backup(database_url: str, path: Path) -> None:
    """Write a consistent copy of the database to ``path`` (replaced only once complete)."""
    url = make_url(database_url)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if url.get_backend_name() == "sqlite":
            _sqlite_backup(_sqlite_file(url), partial)
        else:
            _run_client("pg_dump", url, "--format=custom", "--no-owner", f"--file={partial}")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def restore(database_url: str, path: Path) -> None:
    """Restore the backup at ``path`` into the empty database, then migrate it to head."""
    if not path.is_file():
        raise BackupFailed(f"no backup at {path}")
    asyncio.run(_restore(database_url, path))


async def _restore(database_url: str, path: Path) -> None:
    url = make_url(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
        if tables:
            raise BackupFailed(
                f"the database {_shown(url)} already has tables ({', '.join(sorted(tables)[:3])}"
                "...): restore into an empty database"
            )
        await engine.dispose()  # SQLite: the file is written by another connection below
        if url.get_backend_name() == "sqlite":
            await asyncio.to_thread(_sqlite_restore, path, _sqlite_file(url))
        else:
            await asyncio.to_thread(
                _run_client,
                "pg_restore",
                url,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                str(path),
            )
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def _tables(connection: Connection) -> list[str]:
    return inspect(connection).get_table_names()


def _sqlite_file(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupFailed("an in-memory SQLite database has nothing to back up or restore into")
    return Path(url.database)


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupFailed(f"no SQLite database at {source}")
    origin = sqlite3.connect(source)
    copy = sqlite3.connect(target)
    try:
        origin.backup(copy)
    finally:
        copy.close()
        origin.close()


def _sqlite_restore(backup_file: Path, target: Path) -> None:
    try:
        origin = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            origin.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            origin.close()
    except sqlite3.DatabaseError:
        raise BackupFailed(f"{backup_file} is not a keyhouse SQLite backup") from None
    # Written beside the target and moved into place whole: a failed restore leaves no half.
    partial = target.with_name(f".{target.name}.partial")
    try:
        _sqlite_backup(backup_file, partial)
        for leftover in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
            leftover.unlink(missing_ok=True)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _run_client(tool: str, url: URL, *arguments: str) -> None:
    """Run a PostgreSQL client tool against ``url``; its password goes in the environment,
    never on a command line that ``ps`` shows."""
    if shutil.which(tool) is None:
        raise BackupFailed(f"{tool} is not installed (Debian: apt-get install postgresql-client)")
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    done = subprocess.run(  # noqa: S603 (the tool is found on PATH above, arguments are ours)
        [tool, f"--dbname={libpq}", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise BackupFailed(f"{tool} failed: {lines[0]}")


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)
