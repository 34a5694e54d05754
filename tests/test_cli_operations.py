"""The ``keyhouse`` command's day-to-day operations: one key shown, a key rotated, an
organization's usage, and names already taken by an organization. Same databases and helpers as
tests/test_cli.py."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from app.kit.timeutil import utcnow
from tests import test_cli
from tests.test_cli import (
    SECRET,
    both_databases,
    database_state,
    init,
    keyhouse,
    one_line,
    sqlite_only,
    succeeded,
    verify,
)

# tests/test_cli.py's empty database (SQLite or PostgreSQL), requested by name below.
cli_database = test_cli.cli_database


def create(organization: str, name: str, *scopes: str) -> dict[str, str]:
    options = [item for scope in scopes or ("read:billing",) for item in ("--scope", scope)]
    result = keyhouse(
        "keys", "create", "--organization", organization, "--name", name, *options, "--json"
    )
    answer: dict[str, str] = json.loads(succeeded(result).stdout)
    return answer


# --- duplicate organization names ----------------------------------------------------------


@both_databases
def test_init_twice_with_the_same_name_creates_nothing_and_names_the_existing_one(
    cli_database: str,
) -> None:
    acme = init("Acme")
    before = database_state(cli_database)

    again = keyhouse("init", "--organization", "Acme")

    assert again.exit_code == 2
    message = one_line(again.stderr)
    assert "NAME_TAKEN" in message
    assert acme.id in message
    assert "keyhouse keys create --organization" in message
    assert SECRET.search(again.output) is None
    assert database_state(cli_database) == before


@sqlite_only
def test_orgs_create_refuses_a_name_in_use_as_people_read_it(cli_database: str) -> None:
    init("Acme")
    before = database_state(cli_database)

    for spelling in ("acme", "  ACME ", "Ａｃｍｅ"):
        refused = keyhouse("orgs", "create", spelling)
        assert refused.exit_code == 2, refused.output
        assert "'Acme' exists already" in one_line(refused.stderr)
    assert database_state(cli_database) == before
    succeeded(keyhouse("orgs", "create", "Acme Labs"))


# --- keys show --------------------------------------------------------------------------------


@sqlite_only
def test_keys_show_prints_one_key_without_its_secret(cli_database: str) -> None:
    acme = init()
    key = create(acme.id, "billing", "read:billing", "read:analytics")

    shown = json.loads(
        succeeded(keyhouse("keys", "show", "--organization", acme.id, key["id"], "--json")).stdout
    )
    text = succeeded(keyhouse("keys", "show", "--organization", acme.id, key["id"])).stdout

    assert shown["id"] == key["id"]
    assert (shown["name"], shown["status"]) == ("billing", "ACTIVE")
    assert shown["scopes"] == ["read:analytics", "read:billing"]
    assert shown["hint"] == f"{key['apiKey'][:7]}…{key['apiKey'][-4:]}"
    assert (shown["rateLimit"], shown["replacedBy"], shown["lastUsedAt"]) == (None, None, None)
    assert key["apiKey"] not in json.dumps(shown) + text
    assert "billing" in text
    assert shown["hint"] in text


@sqlite_only
def test_keys_show_of_an_unknown_key_or_another_organizations_is_not_found(
    cli_database: str,
) -> None:
    acme, globex = init("Acme"), init("Globex")
    theirs = create(globex.id, "theirs")

    for key_id in (theirs["id"], "key_nope", "'; DROP TABLE api_keys; --"):
        refused = keyhouse("keys", "show", "--organization", acme.id, key_id)
        assert refused.exit_code == 2
        assert "NOT_FOUND" in refused.stderr
        assert theirs["apiKey"][:7] not in refused.output


# --- keys rotate ------------------------------------------------------------------------------


@both_databases
def test_keys_rotate_prints_a_new_secret_once_and_the_old_one_stops(cli_database: str) -> None:
    acme = init()
    old = create(acme.id, "deploy")

    rotated = json.loads(
        succeeded(keyhouse("keys", "rotate", "--organization", acme.id, old["id"], "--json")).stdout
    )

    assert rotated["previousId"] == old["id"]
    assert SECRET.fullmatch(rotated["apiKey"])
    assert verify(cli_database, rotated["apiKey"], ["read:billing"])["valid"] is True
    refused = verify(cli_database, old["apiKey"])
    assert refused["code"] == "SUPERSEDED"
    shown = json.loads(
        succeeded(
            keyhouse("keys", "show", "--organization", acme.id, rotated["id"], "--json")
        ).stdout
    )
    assert (shown["name"], shown["scopes"]) == ("deploy", ["read:billing"])


@sqlite_only
def test_keys_rotate_with_a_grace_period_keeps_the_old_secret_until_then(
    cli_database: str,
) -> None:
    acme = init()
    old = create(acme.id, "deploy")

    result = succeeded(
        keyhouse(
            "keys", "rotate", "--organization", acme.id, old["id"], "--grace-period-hours", "2"
        )
    )

    assert len(SECRET.findall(result.output)) == 1
    assert "shown once" in result.stdout
    answer = verify(cli_database, old["apiKey"])
    assert (answer["valid"], answer["deprecated"]) == (True, True)
    sunset = datetime.fromisoformat(answer["sunset"])
    assert timedelta(hours=1, minutes=59) < sunset - utcnow() <= timedelta(hours=2)


@sqlite_only
def test_a_rotation_refused_changes_nothing(cli_database: str) -> None:
    acme = init()
    old = create(acme.id, "deploy")
    succeeded(keyhouse("keys", "revoke", "--organization", acme.id, old["id"]))
    before = database_state(cli_database)

    for arguments in (
        [old["id"]],  # revoked
        ["key_nope"],
        [old["id"], "--grace-period-hours", "100000"],
    ):
        refused = keyhouse("keys", "rotate", "--organization", acme.id, *arguments)
        assert refused.exit_code == 2, refused.output
        assert SECRET.search(refused.output) is None
    assert database_state(cli_database) == before


# --- usage ------------------------------------------------------------------------------------


@both_databases
def test_usage_counts_an_organizations_uses_by_key_and_outcome(cli_database: str) -> None:
    acme, globex = init("Acme"), init("Globex")
    billing = create(acme.id, "billing")
    theirs = create(globex.id, "theirs")
    verify(cli_database, billing["apiKey"], ["read:billing"])
    verify(cli_database, billing["apiKey"], ["read:billing"])
    verify(cli_database, billing["apiKey"], ["write:billing"])
    verify(cli_database, theirs["apiKey"], ["read:billing"])

    figures = json.loads(succeeded(keyhouse("usage", "--organization", acme.id, "--json")).stdout)
    text = succeeded(keyhouse("usage", "--organization", acme.id, "--days", "1")).stdout

    assert (figures["requests"], figures["valid"], figures["rejected"]) == (3, 2, 1)
    assert figures["byKey"] == [
        {"id": billing["id"], "name": "billing", "requests": 3, "valid": 2, "rejected": 1}
    ]
    assert {row["outcome"]: row["requests"] for row in figures["byOutcome"]} == {
        "VALID": 2,
        "INSUFFICIENT_SCOPE": 1,
    }
    assert datetime.fromisoformat(figures["to"]) - datetime.fromisoformat(
        figures["from"]
    ) == timedelta(days=30)
    assert "3 requests, 2 valid, 1 rejected" in one_line(text)
    assert theirs["id"] not in text
    assert billing["id"] in text
    one_key = json.loads(
        succeeded(
            keyhouse("usage", "--organization", acme.id, "--key", billing["id"], "--json")
        ).stdout
    )
    assert (one_key["requests"], one_key["valid"]) == (3, 2)
    # Another organization's key counts nothing here.
    other = json.loads(
        succeeded(
            keyhouse("usage", "--organization", acme.id, "--key", theirs["id"], "--json")
        ).stdout
    )
    assert (other["requests"], other["byKey"]) == (0, [])


@sqlite_only
def test_usage_refuses_bad_input_in_one_line(cli_database: str) -> None:
    acme = init()
    before = database_state(cli_database)

    for arguments in (
        ["--organization", "org_nope"],
        ["--organization", acme.id, "--days", "0"],
        ["--organization", acme.id, "--days", "5000"],
    ):
        refused = keyhouse("usage", *arguments)
        assert refused.exit_code == 2, refused.output
    assert database_state(cli_database) == before
