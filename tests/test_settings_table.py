"""The README's configuration table is complete: every setting, as app/config.py has it."""

from __future__ import annotations

from pathlib import Path

from app import settings_table
from app.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_description() -> None:
    undescribed = [name for name, field in Settings.model_fields.items() if not field.description]

    assert undescribed == [], "give each setting a docstring in app/config.py"


def test_the_readme_table_is_the_one_written_from_the_settings() -> None:
    readme = README.read_text()

    assert settings_table.rewrite(readme) == readme, "run `make settings-table`"
    for name in Settings.model_fields:
        assert f"| `KEYHOUSE_{name.upper()}` |" in readme


def test_a_default_is_shown_as_the_code_has_it() -> None:
    table = settings_table.markdown()

    assert "| `KEYHOUSE_DATABASE_URL` | `sqlite+aiosqlite:///./keyhouse.db` |" in table
    assert "| `KEYHOUSE_REDIS_URL` | unset |" in table
    assert "| `KEYHOUSE_CACHE_TTL_WITHOUT_BROADCAST_SECONDS` | `5` |" in table
    assert "| `KEYHOUSE_PLANE` | `all` |" in table
