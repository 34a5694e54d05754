"""The server secret: 32 random bytes only this deployment knows.

Idempotency records seal a new key's secret under a key derived from this secret *and* the
client's idempotency key, so a copy of the database alone (a backup, a replica, a leaked dump)
does not open them, however guessable the idempotency key.

``KEYHOUSE_SECRET_KEY`` holds it as 64 hex characters (``keyhouse secret generate`` prints one).
The embedded default (SQLite) needs no setup: on first run it creates one in a file beside the
database, readable only by its owner. With any other database there is no obvious place for
such a file, and instances must share the secret, so a missing setting is a startup error.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url

from app.config import Settings

SECRET_BYTES = 32


class MissingServerSecret(Exception):
    """KEYHOUSE_SECRET_KEY is unset where keyhouse cannot create one itself."""


def generate() -> str:
    return secrets.token_hex(SECRET_BYTES)


def parse(value: str) -> bytes:
    """The secret from its 64 hex characters; ValueError for anything else."""
    raw = bytes.fromhex(value.strip())  # ValueError when not hex
    if len(raw) != SECRET_BYTES:
        raise ValueError(f"the server secret is {SECRET_BYTES} bytes, written as 64 hex characters")
    return raw


def secret_file(database_url: str) -> Path | None:
    """Where the embedded default keeps its secret: beside the SQLite file (None in memory)."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(f"{database}.secret")


def _read_or_create(path: Path) -> bytes:
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        pass
    # Written whole under a name of this process's own, then linked into place: of two
    # processes starting at once, one link wins, and neither ever reads a half-written file.
    written = path.with_name(f"{path.name}.{os.getpid()}.new")
    descriptor = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(generate() + "\n")
    try:
        os.link(written, path)
    except FileExistsError:
        pass  # another process made it first: its secret is the one
    finally:
        written.unlink()
    return parse(path.read_text())


def load_previous(settings: Settings) -> bytes | None:
    """The secret before the current one (``KEYHOUSE_SECRET_KEY_PREVIOUS``), during a rotation."""
    previous = settings.secret_key_previous
    return None if previous is None else parse(previous.get_secret_value())


def load(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return parse(settings.secret_key.get_secret_value())
    if not settings.is_sqlite:
        raise MissingServerSecret(
            "KEYHOUSE_SECRET_KEY is not set. With a shared database every instance needs the "
            "same server secret: create one with `keyhouse secret generate` and set it."
        )
    path = secret_file(settings.database_url)
    if path is None:
        return secrets.token_bytes(SECRET_BYTES)  # an in-memory database dies with the process
    return _read_or_create(path)
