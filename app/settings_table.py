"""The README's configuration table, written from :class:`Settings` itself: every setting, its
environment variable and its default as the code has them, and what it does.

``python -m app.settings_table`` rewrites the table in README.md (``make settings-table``);
tests/test_settings_table.py fails when a setting has no description (its docstring in
app/config.py) or the README's table differs from what this writes.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from app.config import Settings

BEGIN = "<!-- settings table: written by `make settings-table` from app/config.py -->"
END = "<!-- end of settings table -->"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "—"  # the description says what it is
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _description(field: FieldInfo) -> str:
    return " ".join((field.description or "").split())


def markdown() -> str:
    """The table, between its markers."""
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name, field in Settings.model_fields.items():
        variable = f"`{prefix}{name.upper()}`"
        rows.append(f"| {variable} | {_default(field)} | {_description(field)} |")
    return "\n".join([BEGIN, *rows, END])


def rewrite(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`markdown`."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + markdown() + readme[end:]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(rewrite(path.read_text()))
