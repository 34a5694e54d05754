"""``keyhouse operator-keys create|list|revoke``: operator keys are made on the server only,
shown once, stored hashed, and refused from the request after their revocation."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from app import cli
from app.auth.secret import format_problem, hash_secret
from tests.conftest import fresh_postgres_database
from tests.test_cli import _request, database_state, graphql

OPERATOR_KEY = re.compile(r"kho_[0-9A-Za-z]{38}")


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database of the test's own as KEYHOUSE_DATABASE_URL, no other setting."""
    for name in list(os.environ):
        if name.startswith("KEYHOUSE_") and name != "KEYHOUSE_SECRET_KEY":
            monkeypatch.delenv(name)
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}"
        monkeypatch.setenv("KEYHOUSE_DATABASE_URL", url)
        yield url
        return
    with fresh_postgres_database() as url:
        monkeypatch.setenv("KEYHOUSE_DATABASE_URL", url)
        yield url


def keyhouse(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def created(name: str) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(
        succeeded(keyhouse("operator-keys", "create", "--name", name, "--json")).stdout
    )
    return answer


def test_create_prints_the_key_once_and_stores_only_its_hash(cli_database: str) -> None:
    answer = created("signup backend")

    assert set(answer) == {"operatorKeyId", "operatorKey"}
    secret = answer["operatorKey"]
    assert OPERATOR_KEY.fullmatch(secret)
    assert format_problem(secret, "kho") is None, "the same checksum as every key"
    stored = database_state(cli_database)["operator_keys"]
    assert secret not in str(stored)
    assert hash_secret(secret) in str(stored)
    data = graphql(cli_database, secret, "{ organizations { nodes { id } } }")
    assert data == {"organizations": {"nodes": []}}


def test_create_without_json_says_it_is_shown_once(cli_database: str) -> None:
    result = succeeded(keyhouse("operator-keys", "create", "--name", "billing"))

    assert OPERATOR_KEY.search(result.stdout)
    assert "shown once" in result.stdout


def test_list_shows_every_key_newest_first_never_a_secret(cli_database: str) -> None:
    first = created("signup backend")
    second = created("billing")

    listed = json.loads(succeeded(keyhouse("operator-keys", "list", "--json")).stdout)
    table = succeeded(keyhouse("operator-keys", "list")).stdout

    assert [key["id"] for key in listed] == [second["operatorKeyId"], first["operatorKeyId"]]
    assert [key["status"] for key in listed] == ["ACTIVE", "ACTIVE"]
    assert listed[0]["hint"].startswith("kho_")
    assert first["operatorKey"] not in table
    assert first["operatorKeyId"] in table


def test_a_revoked_operator_key_is_refused_from_its_next_request(cli_database: str) -> None:
    answer = created("signup backend")
    graphql(cli_database, answer["operatorKey"], "{ organizations { nodes { id } } }")

    revoked = succeeded(keyhouse("operator-keys", "revoke", answer["operatorKeyId"]))
    listed = json.loads(succeeded(keyhouse("operator-keys", "list", "--json")).stdout)

    assert "Revoked" in revoked.stdout
    assert listed[0]["status"] == "REVOKED"

    refused = _request(
        cli_database,
        "POST",
        "/graphql",
        key=answer["operatorKey"],
        body={"query": "{ organizations { nodes { id } } }"},
    )
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["extensions"]["reason"] == "REVOKED"


def test_operator_key_commands_land_in_the_operator_audit_log(cli_database: str) -> None:
    first = created("signup backend")
    second = created("to revoke")
    succeeded(keyhouse("operator-keys", "revoke", second["operatorKeyId"]))

    log = graphql(
        cli_database,
        first["operatorKey"],
        "{ operatorAuditLog { nodes { action actor { id } details } } }",
    )

    events = log["operatorAuditLog"]["nodes"]
    assert [e["action"] for e in events] == [
        "OPERATOR_KEY_REVOKED",
        "OPERATOR_KEY_CREATED",
        "OPERATOR_KEY_CREATED",
    ]
    assert all(e["actor"] == {"id": None} for e in events), "the CLI on the server"
    assert events[0]["details"]["operatorKeyId"] == second["operatorKeyId"]
    assert first["operatorKey"] not in str(events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", ""], "INVALID_INPUT"),
        (["create", "--name", "x" * 129], "INVALID_INPUT"),
        (["create", "--name", "bad\u202ename"], "INVALID_INPUT"),
        (["revoke", "opk_doesnotexist"], "NOT_FOUND"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cli_database: str, args: list[str], message: str
) -> None:
    succeeded(keyhouse("orgs", "list"))  # the database exists and is migrated
    before = database_state(cli_database)

    result = keyhouse("operator-keys", *args)

    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert database_state(cli_database) == before
