"""The deployment guide and its files name only what keyhouse has: settings that exist, serve
options that exist, files that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from app import cli
from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "deploy.md"
UNIT = ROOT / "deploy" / "systemd" / "keyhouse.service"
ENVIRONMENT = ROOT / "deploy" / "systemd" / "keyhouse.env"
SETTINGS = {f"KEYHOUSE_{name.upper()}" for name in Settings.model_fields}


def test_every_setting_the_guide_and_its_files_name_exists() -> None:
    for path in (GUIDE, UNIT, ENVIRONMENT, ROOT / "deploy" / "caddy" / "Caddyfile"):
        named = set(re.findall(r"KEYHOUSE_[A-Z_]+[A-Z]", path.read_text()))
        assert named <= SETTINGS, (path.name, named - SETTINGS)


def test_the_environment_file_sets_settings_only() -> None:
    for line in ENVIRONMENT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.split("=", 1)[0] in SETTINGS, line


def test_the_units_command_is_one_keyhouse_accepts() -> None:
    [command] = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    arguments = shlex.split(command.removeprefix("ExecStart="))
    assert arguments[0].endswith("/bin/keyhouse")
    help_text = CliRunner().invoke(cli.app, ["serve", "--help"]).output

    for option in (argument for argument in arguments[1:] if argument.startswith("--")):
        assert option in help_text, option


def test_the_files_the_guide_links_exist() -> None:
    for target in re.findall(r"\]\(\.\./([^)#]+)", GUIDE.read_text()):
        assert (ROOT / target).exists(), target
