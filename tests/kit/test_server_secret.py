"""The server secret: given as KEYHOUSE_SECRET_KEY, made on first run beside a SQLite database
(readable by its owner only), and required before anything starts on PostgreSQL."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app import cli
from app.config import Settings
from app.kit import server_secret
from app.runtime import Runtime


@pytest.fixture(autouse=True)
def no_secret_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYHOUSE_SECRET_KEY", raising=False)


def test_the_setting_is_used_when_given() -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///./unused.db", secret_key="ab" * 32)

    assert server_secret.load(settings) == bytes.fromhex("ab" * 32)


def test_the_embedded_default_creates_its_secret_once_readable_only_by_its_owner(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}")

    first = server_secret.load(settings)
    again = server_secret.load(settings)

    path = tmp_path / "keyhouse.db.secret"
    assert first == again
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_postgresql_without_a_secret_is_a_clear_startup_error() -> None:
    settings = Settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/test")

    with pytest.raises(server_secret.MissingServerSecret, match="keyhouse secret generate"):
        Runtime.create(settings)


def test_serve_on_postgresql_without_a_secret_says_so_and_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYHOUSE_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")

    result = CliRunner().invoke(cli.app, ["serve"])

    assert result.exit_code == 1
    assert "KEYHOUSE_SECRET_KEY is not set" in result.output


@pytest.mark.parametrize("setting", ["secret_key", "secret_key_previous"])
@pytest.mark.parametrize("value", ["zz" * 32, "ab" * 31, "ab" * 33, ""])
def test_a_malformed_secret_is_refused_without_being_echoed(setting: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate({setting: value})

    assert "64 hex characters" in str(raised.value)
    if value:
        assert value not in str(raised.value)


def test_the_previous_secret_is_loaded_beside_the_current_one() -> None:
    settings = Settings(secret_key="ab" * 32, secret_key_previous="cd" * 32)

    assert server_secret.load(settings) == bytes.fromhex("ab" * 32)
    assert server_secret.load_previous(settings) == bytes.fromhex("cd" * 32)
    assert server_secret.load_previous(Settings(secret_key="ab" * 32)) is None


def test_secret_generate_prints_a_fresh_usable_secret() -> None:
    first = CliRunner().invoke(cli.app, ["secret", "generate"]).output.strip()
    second = CliRunner().invoke(cli.app, ["secret", "generate"]).output.strip()

    assert first != second
    assert server_secret.parse(first) != server_secret.parse(second)
    assert Settings(secret_key=first).secret_key is not None
