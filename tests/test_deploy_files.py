"""The deployment guide and its files name only what keyhouse has: settings that exist, serve
options that exist, files that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from app import cli
from app.config import Settings
from tests.keys.test_nginx_forward_auth import nginx_binary

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


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keys.example.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certificate_file, key_file = directory / "fullchain.pem", directory / "privkey.pem"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_file, key_file


@pytest.mark.slow
def test_the_guides_tls_configuration_is_one_nginx_accepts(tmp_path: Path) -> None:
    binary = nginx_binary()
    site = GUIDE.read_text().split("```nginx\n", 1)[1].split("\n```", 1)[0]
    certificate, key = _self_signed(tmp_path)
    site = site.replace(
        "/etc/letsencrypt/live/keys.example.com/fullchain.pem", str(certificate)
    ).replace("/etc/letsencrypt/live/keys.example.com/privkey.pem", str(key))
    (tmp_path / "site.conf").write_text(site)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
        f"events {{}}\nhttp {{\n    include {tmp_path / 'site.conf'};\n}}\n"
    )

    checked = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert checked.returncode == 0, checked.stderr
