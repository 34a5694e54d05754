"""The dashboard's files do not depend on the database: its HTTP tests run on SQLite only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "keyhouse.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"
