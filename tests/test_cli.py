"""The ``keyhouse`` command: init, orgs, keys, export-schema and serve's first start, against a
database of the test's own (an empty SQLite file, or an empty PostgreSQL database) named by
``KEYHOUSE_DATABASE_URL``, as an operator would run it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from typer.testing import CliRunner, Result

from app import cli
from app.config import Settings
from app.graphql.schema import build_schema
from app.keys.scopes import ScopeCatalogue
from app.kit.db import create_engine
from app.kit.timeutil import utcnow
from app.main import create_app
from app.migrate import alembic_config
from app.runtime import Runtime
from tests.conftest import fresh_postgres_database
from tests.processes import (
    environment_without_settings,
    free_port,
    healthy,
    keyhouse_command,
    started,
    wait_until,
)
from tests.support import snapshot

ROOT = Path(__file__).resolve().parents[1]
SECRET = re.compile(r"kh_[0-9A-Za-z]{30,}")
T = TypeVar("T")


# --- Running the command ----------------------------------------------------------------------


@pytest.fixture
def cli_database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database (not even migrated), as ``KEYHOUSE_DATABASE_URL``; no other setting of
    the developer's environment leaks in (but for the tests' server secret: tests/conftest.py)."""
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


both_databases = pytest.mark.parametrize("cli_database", ["sqlite", "postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("cli_database", ["sqlite"], indirect=True)


def keyhouse(*args: str) -> Result:
    """``keyhouse ARGS`` in this process; stdout and stderr apart."""
    return CliRunner().invoke(cli.app, list(args))


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def one_line(output: str) -> str:
    return " ".join(output.split())


def _run(url: str, work: Callable[[Runtime], Awaitable[T]]) -> T:
    async def main() -> T:
        runtime = Runtime.create(Settings(database_url=url, usage_flush_interval_seconds=3600))
        try:
            return await work(runtime)
        finally:
            await runtime.broadcast.close()
            await runtime.engine.dispose()

    return asyncio.run(main())


def database_state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return _run(url, snapshot)


def _request(
    url: str, method: str, path: str, *, key: str | None = None, body: Any = None
) -> httpx.Response:
    """One request to a keyhouse app on the database, started and stopped around it."""

    async def work(runtime: Runtime) -> httpx.Response:
        app = create_app(runtime=runtime)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cli.test") as client:
                headers = {} if key is None else {"X-API-Key": key}
                return await client.request(method, path, json=body, headers=headers)

    return _run(url, work)


def verify(url: str, key: str, scopes: list[str] | None = None) -> dict[str, Any]:
    response = _request(url, "POST", "/v1/keys/verify", body={"key": key, "scopes": scopes or []})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def graphql(url: str, key: str, query: str) -> dict[str, Any]:
    response = _request(url, "POST", "/graphql", key=key, body={"query": query})
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def every_scope() -> list[str]:
    return sorted(ScopeCatalogue(Settings().product_scopes).names())


def migrated_revision(url: str) -> str | None:
    async def read() -> str | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT version_num FROM alembic_version"))
                return result.scalar_one_or_none()
        finally:
            await engine.dispose()

    return asyncio.run(read())


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@dataclass(frozen=True)
class Organization:
    id: str
    admin_key: str


def init(name: str = "Acme") -> Organization:
    answer = json.loads(succeeded(keyhouse("init", "--organization", name, "--json")).stdout)
    return Organization(answer["organizationId"], answer["apiKey"])


# --- init -------------------------------------------------------------------------------------


@both_databases
def test_init_json_prints_only_the_organization_id_and_an_admin_key_holding_every_scope(
    cli_database: str,
) -> None:
    result = succeeded(keyhouse("init", "--organization", "Acme", "--json"))

    answer = json.loads(result.stdout)
    assert set(answer) == {"organizationId", "apiKey"}
    assert result.stdout == json.dumps(answer) + "\n"
    assert result.stderr == ""
    assert answer["organizationId"].startswith("org_")
    assert SECRET.fullmatch(answer["apiKey"])

    # The migrations ran; the key authenticates, for its organization, with every scope.
    assert migrated_revision(cli_database) == head_revision()
    verified = verify(cli_database, answer["apiKey"], every_scope())
    assert verified["valid"] is True, verified
    assert verified["organizationId"] == answer["organizationId"]
    assert verified["scopes"] == every_scope()
    data = graphql(
        cli_database,
        answer["apiKey"],
        "{ organization { id name keyCounts { total } } apiKeys { nodes { name } } }",
    )
    assert data["organization"] == {
        "id": answer["organizationId"],
        "name": "Acme",
        "keyCounts": {"total": 1},
    }
    assert data["apiKeys"]["nodes"] == [{"name": "admin"}]


def test_init_json_in_a_process_of_its_own_writes_the_json_alone_to_stdout(
    tmp_path: Path,
) -> None:
    # The real standard output and error (logging, warnings, Rich), not a test runner's.
    env = environment_without_settings()
    env["KEYHOUSE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}"
    done = subprocess.run(
        [*keyhouse_command(), "init", "--organization", "Acme", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"organizationId", "apiKey"}
    assert done.stdout == json.dumps(answer) + "\n"
    assert answer["apiKey"] not in done.stderr
    assert "Traceback" not in done.stderr


@sqlite_only
def test_init_without_json_shows_the_admin_key_once_and_says_so(cli_database: str) -> None:
    result = succeeded(keyhouse("init", "--organization", "Acme"))

    secrets = SECRET.findall(result.output)
    assert len(secrets) == 1
    assert "shown once" in result.stdout
    assert "Acme" in result.stdout
    assert verify(cli_database, secrets[0])["valid"] is True


# --- orgs create ------------------------------------------------------------------------------


@both_databases
def test_orgs_create_json_makes_a_further_organization_with_its_own_admin_key(
    cli_database: str,
) -> None:
    acme = init("Acme")

    result = succeeded(keyhouse("orgs", "create", "Globex", "--json"))

    answer = json.loads(result.stdout)
    assert set(answer) == {"organizationId", "apiKey"}
    assert result.stdout == json.dumps(answer) + "\n"
    assert result.stderr == ""
    assert answer["organizationId"] != acme.id
    assert answer["apiKey"] != acme.admin_key
    verified = verify(cli_database, answer["apiKey"], every_scope())
    assert (verified["valid"], verified["organizationId"]) == (True, answer["organizationId"])
    assert verified["scopes"] == every_scope()
    # Each key sees its own organization only.
    query = "{ organization { name } apiKeys { totalCount } }"
    assert graphql(cli_database, answer["apiKey"], query) == {
        "organization": {"name": "Globex"},
        "apiKeys": {"totalCount": 1},
    }
    assert graphql(cli_database, acme.admin_key, query)["organization"] == {"name": "Acme"}


@sqlite_only
def test_orgs_create_prints_a_name_with_brackets_as_typed(cli_database: str) -> None:
    init()

    result = succeeded(keyhouse("orgs", "create", "[red]Ops[/red] team"))

    assert "[red]Ops[/red] team" in result.stdout
    assert len(SECRET.findall(result.output)) == 1


# --- keys create, list, revoke ----------------------------------------------------------------


@both_databases
def test_keys_create_list_and_revoke(cli_database: str) -> None:
    acme = init()

    created = succeeded(
        keyhouse(
            "keys",
            "create",
            "--organization",
            acme.id,
            "--name",
            "home-assistant",
            "--scope",
            "read:charge_points",
            "--scope",
            "read:sessions",
            "--expires-in-days",
            "30",
        )
    )
    secrets = SECRET.findall(created.output)
    assert len(secrets) == 1, created.output
    secret = secrets[0]
    assert "shown once" in created.stdout
    key_id = re.search(r"\((key_[0-9A-Za-z]+)\)", created.stdout)
    assert key_id is not None, created.stdout
    verified = verify(cli_database, secret)
    assert verified["valid"] is True
    assert verified["keyId"] == key_id.group(1)
    assert verified["organizationId"] == acme.id
    assert verified["scopes"] == ["read:charge_points", "read:sessions"]
    lifetime = datetime.fromisoformat(verified["expiresAt"]) - utcnow()
    assert timedelta(days=29, hours=23) < lifetime <= timedelta(days=30)

    listed = succeeded(keyhouse("keys", "list", "--organization", acme.id))
    # Whole ids and hints (not cut to the 80 columns of a pipe), never a secret.
    assert key_id.group(1) in listed.stdout
    assert "home-assistant" in listed.stdout
    assert f"{secret[:7]}…{secret[-4:]}" in listed.stdout
    assert SECRET.search(listed.output) is None
    rows = json.loads(
        succeeded(keyhouse("keys", "list", "--organization", acme.id, "--json")).stdout
    )
    assert [(row["name"], row["status"]) for row in rows] == [
        ("home-assistant", "ACTIVE"),
        ("admin", "ACTIVE"),
    ]
    assert rows[0]["id"] == key_id.group(1)
    assert rows[0]["scopes"] == ["read:charge_points", "read:sessions"]
    assert SECRET.search(json.dumps(rows)) is None

    revoked = succeeded(keyhouse("keys", "revoke", "--organization", acme.id, key_id.group(1)))
    assert key_id.group(1) in revoked.stdout
    assert SECRET.search(revoked.output) is None
    refused = verify(cli_database, secret)
    assert (refused["valid"], refused["code"]) == (False, "REVOKED")
    rows = json.loads(
        succeeded(keyhouse("keys", "list", "--organization", acme.id, "--json")).stdout
    )
    assert rows[0]["status"] == "REVOKED"
    assert rows[0]["revokedAt"] is not None
    # The admin key is untouched.
    assert verify(cli_database, acme.admin_key)["valid"] is True


@sqlite_only
def test_keys_create_json_prints_the_id_and_the_secret(cli_database: str) -> None:
    acme = init()

    result = succeeded(
        keyhouse(
            "keys",
            "create",
            "--organization",
            acme.id,
            "--name",
            "ci",
            "--scope",
            "write:webhooks",
            "--json",
        )
    )

    answer = json.loads(result.stdout)
    assert set(answer) == {"id", "apiKey"}
    assert result.stdout == json.dumps(answer) + "\n"
    verified = verify(cli_database, answer["apiKey"])
    assert (verified["keyId"], verified["scopes"]) == (answer["id"], ["write:webhooks"])
    assert verified["expiresAt"] is None


@sqlite_only
def test_keys_with_brackets_in_their_name_are_printed_as_typed(cli_database: str) -> None:
    # Rich markup in a name once crashed the command after the key was saved, losing its secret.
    acme = init()

    created = succeeded(
        keyhouse(
            "keys",
            "create",
            "--organization",
            acme.id,
            "--name",
            "ci [/bold] bot",
            "--scope",
            "read:billing",
        )
    )

    assert "ci [/bold] bot" in created.stdout
    assert len(SECRET.findall(created.stdout)) == 1
    listed = succeeded(keyhouse("keys", "list", "--organization", acme.id))
    assert "ci [/bold] bot" in listed.stdout


# --- Bad input: a clear message, no traceback, nothing changed --------------------------------


@dataclass(frozen=True)
class Seed:
    acme: Organization
    globex: Organization
    acme_key_id: str
    globex_key_id: str


UNKNOWN_ORG = "org_0000000000000000000000"
UNKNOWN_KEY = "key_0000000000000000000000"


def _create(organization: str, *args: str) -> list[str]:
    return ["keys", "create", "--organization", organization, *args]


BAD_INPUTS: dict[str, tuple[Callable[[Seed], list[str]], str]] = {
    "create-unknown-organization": (
        lambda s: _create(UNKNOWN_ORG, "--name", "x", "--scope", "read:billing"),
        f"NOT_FOUND: No organization '{UNKNOWN_ORG}'",
    ),
    "create-unknown-scope": (
        lambda s: _create(s.acme.id, "--name", "x", "--scope", "read:billing", "--scope", "fly"),
        "INVALID_SCOPE (scopes): Unknown scope(s): fly.",
    ),
    "create-scope-with-brackets": (
        lambda s: _create(s.acme.id, "--name", "x", "--scope", "[/x]"),
        "INVALID_SCOPE (scopes): Unknown scope(s): [/x].",
    ),
    "create-empty-name": (
        lambda s: _create(s.acme.id, "--name", "", "--scope", "read:billing"),
        "INVALID_INPUT (name)",
    ),
    "create-blank-name": (
        lambda s: _create(s.acme.id, "--name", "   ", "--scope", "read:billing"),
        "INVALID_INPUT (name)",
    ),
    "create-name-too-long": (
        lambda s: _create(s.acme.id, "--name", "n" * 129, "--scope", "read:billing"),
        "INVALID_INPUT (name)",
    ),
    "create-name-taken": (
        lambda s: _create(s.acme.id, "--name", "charger", "--scope", "read:billing"),
        "NAME_TAKEN (name)",
    ),
    "create-no-scope": (
        lambda s: _create(s.acme.id, "--name", "x"),
        "Missing option '--scope'",
    ),
    "create-expires-in-0-days": (
        lambda s: _create(
            s.acme.id, "--name", "x", "--scope", "read:billing", "--expires-in-days", "0"
        ),
        "INVALID_INPUT (expiresInDays): expiresInDays must be between 1 and 3650, got 0.",
    ),
    "create-expires-in-negative-days": (
        lambda s: _create(
            s.acme.id, "--name", "x", "--scope", "read:billing", "--expires-in-days", "-3"
        ),
        "INVALID_INPUT (expiresInDays): expiresInDays must be between 1 and 3650, got -3.",
    ),
    "create-expires-in-too-many-days": (
        lambda s: _create(
            s.acme.id, "--name", "x", "--scope", "read:billing", "--expires-in-days", "3651"
        ),
        "INVALID_INPUT (expiresInDays): expiresInDays must be between 1 and 3650, got 3651.",
    ),
    "create-expires-in-days-not-a-number": (
        lambda s: _create(
            s.acme.id, "--name", "x", "--scope", "read:billing", "--expires-in-days", "soon"
        ),
        "Invalid value for '--expires-in-days'",
    ),
    "revoke-unknown-key": (
        lambda s: ["keys", "revoke", "--organization", s.acme.id, UNKNOWN_KEY],
        f"NOT_FOUND: No API key with id '{UNKNOWN_KEY}'",
    ),
    "revoke-malformed-key-id": (
        lambda s: ["keys", "revoke", "--organization", s.acme.id, "charger"],
        "NOT_FOUND: No API key with id 'charger'",
    ),
    "revoke-another-organizations-key": (
        lambda s: ["keys", "revoke", "--organization", s.acme.id, s.globex_key_id],
        "NOT_FOUND: No API key with id '{globex}'",
    ),
    "revoke-in-an-unknown-organization": (
        lambda s: ["keys", "revoke", "--organization", UNKNOWN_ORG, s.acme_key_id],
        "NOT_FOUND: No API key with id '{acme}'",
    ),
    "list-unknown-organization": (
        lambda s: ["keys", "list", "--organization", UNKNOWN_ORG],
        f"NOT_FOUND: No organization '{UNKNOWN_ORG}'",
    ),
    "orgs-create-empty-name": (
        lambda s: ["orgs", "create", ""],
        "INVALID_INPUT: An organization name has 1 to 128 characters.",
    ),
    "orgs-create-name-too-long": (
        lambda s: ["orgs", "create", "o" * 129, "--json"],
        "INVALID_INPUT: An organization name has 1 to 128 characters.",
    ),
    "init-blank-name": (
        lambda s: ["init", "--organization", "  ", "--json"],
        "INVALID_INPUT: An organization name has 1 to 128 characters.",
    ),
}


@pytest.fixture
def seed(cli_database: str) -> Seed:
    acme = init("Acme")
    globex = json.loads(succeeded(keyhouse("orgs", "create", "Globex", "--json")).stdout)
    keys = {}
    for organization, name in ((acme.id, "charger"), (globex["organizationId"], "globex-app")):
        created = keyhouse(
            *_create(organization, "--name", name, "--scope", "read:charge_points", "--json")
        )
        keys[name] = json.loads(succeeded(created).stdout)["id"]
    return Seed(
        acme,
        Organization(globex["organizationId"], globex["apiKey"]),
        keys["charger"],
        keys["globex-app"],
    )


@both_databases
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_message_and_changes_nothing(
    cli_database: str, seed: Seed, case: str
) -> None:
    arguments, message = BAD_INPUTS[case]
    message = message.replace("{globex}", seed.globex_key_id).replace("{acme}", seed.acme_key_id)
    before = database_state(cli_database)

    result = keyhouse(*arguments(seed))

    assert result.exit_code != 0, result.output
    # The command ended on purpose (typer.Exit / a usage error), not on an exception.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert message in one_line(result.stderr), result.stderr
    assert result.stdout == ""
    assert database_state(cli_database) == before


def test_a_database_that_cannot_be_opened_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv(
        "KEYHOUSE_DATABASE_URL", f"postgresql+asyncpg://keyhouse:hunter2@127.0.0.1:{port}/x"
    )
    result = keyhouse("keys", "list", "--organization", UNKNOWN_ORG)

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    stderr = one_line(result.stderr)
    assert f"cannot open the database postgresql+asyncpg://keyhouse:***@127.0.0.1:{port}/x" in (
        stderr
    )
    assert "KEYHOUSE_DATABASE_URL" in stderr
    assert "hunter2" not in result.output

    # A process of its own: aiosqlite's thread outlives a failed connection, which only a
    # test runner's thread-exception check would notice.
    env = environment_without_settings()
    env["KEYHOUSE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/no/such/dir.db"
    done = subprocess.run(
        [*keyhouse_command(), "init", "--organization", "Acme", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "unable to open database file" in one_line(done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# --- export-schema ----------------------------------------------------------------------------


def test_export_schema_prints_the_schema_or_writes_it_to_a_file(tmp_path: Path) -> None:
    expected = build_schema(Settings()).as_str() + "\n"

    printed = succeeded(keyhouse("export-schema"))
    assert printed.stdout == expected
    assert "type Query {" in printed.stdout
    assert "createApiKey(input: CreateApiKeyInput!): CreateApiKeyPayload!" in printed.stdout

    output = tmp_path / "schema.graphql"
    written = succeeded(keyhouse("export-schema", "--output", str(output)))
    assert written.stdout == ""
    assert output.read_text() == expected


# --- serve: the first start -------------------------------------------------------------------


@dataclass
class ServeCall:
    host: str
    port: int


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[ServeCall]:
    """``serve`` does everything but listen: uvicorn.run records its arguments instead."""
    import uvicorn

    calls: list[ServeCall] = []

    def run(app: object, *, host: str, port: int, **_: object) -> None:
        assert callable(app)
        calls.append(ServeCall(host, port))

    monkeypatch.setattr(uvicorn, "run", run)
    return calls


@both_databases
def test_serve_on_an_empty_database_migrates_and_prints_an_admin_key_once(
    cli_database: str, no_server: list[ServeCall]
) -> None:
    first = succeeded(keyhouse("serve", "--host", "127.0.0.1", "--port", "8123"))

    assert no_server == [ServeCall("127.0.0.1", 8123)]
    assert migrated_revision(cli_database) == head_revision()
    output = one_line(first.stdout)
    assert "First start" in output
    assert "GraphiQL: http://127.0.0.1:8123/graphql" in output
    assert "X-API-Key" in output
    secrets = SECRET.findall(first.output)
    assert len(secrets) == 1
    verified = verify(cli_database, secrets[0], every_scope())
    assert verified["valid"] is True
    assert graphql(cli_database, secrets[0], "{ organization { name } }") == {
        "organization": {"name": cli.DEFAULT_ORGANIZATION}
    }

    # The next start finds the organization: no new one, no key printed.
    again = succeeded(keyhouse("serve", "--port", "8124"))
    assert SECRET.search(again.output) is None
    assert "First start" not in again.output
    assert "Admin key lost? Make another with `keyhouse keys create" in one_line(again.stdout)
    assert "GraphiQL: http://127.0.0.1:8124/graphql" in one_line(again.stdout)
    assert len(database_state(cli_database)["organizations"]) == 1


@sqlite_only
def test_serve_after_init_creates_no_further_organization(
    cli_database: str, no_server: list[ServeCall]
) -> None:
    init("Acme")
    before = database_state(cli_database)

    result = succeeded(keyhouse("serve"))

    assert SECRET.search(result.output) is None
    assert "GraphiQL: http://127.0.0.1:8000/graphql" in one_line(result.stdout)
    assert database_state(cli_database) == before


@pytest.mark.slow
def test_serve_in_a_fresh_directory_answers_with_the_key_it_printed(tmp_path: Path) -> None:
    # The README's first run: no settings at all, so the SQLite file goes in the working directory.
    port = free_port()
    log = tmp_path / "serve.log"
    command = [*keyhouse_command(), "serve", "--port", str(port)]
    env = environment_without_settings()
    base = f"http://127.0.0.1:{port}"
    with started(command, log, cwd=tmp_path, env=env) as process:
        wait_until(lambda: healthy(base), process, "keyhouse serve", log)
        output = log.read_text()
        secrets = SECRET.findall(output)
        assert len(secrets) == 1, output
        assert f"GraphiQL: {base}/graphql" in one_line(output)
        assert (tmp_path / "keyhouse.db").is_file()

        answer = httpx.post(
            f"{base}/graphql",
            json={"query": "{ organization { name } scopes { name } }"},
            headers={"X-API-Key": secrets[0]},
            timeout=10,
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        assert data["organization"] == {"name": cli.DEFAULT_ORGANIZATION}
        assert "write:api_keys" in {scope["name"] for scope in data["scopes"]}
        graphiql = httpx.get(
            f"{base}/graphql", headers={"Accept": "text/html"}, timeout=10, trust_env=False
        )
        assert graphiql.status_code == 200
        assert "graphiql" in graphiql.text.lower()
    # The secret was printed once, at start-up, and never logged afterwards.
    assert len(SECRET.findall(log.read_text())) == 1


@sqlite_only
@pytest.mark.parametrize("plane", ["data", "control", "all"])
def test_serve_runs_the_plane_it_is_asked_for(
    cli_database: str, monkeypatch: pytest.MonkeyPatch, plane: str
) -> None:
    import uvicorn
    from starlette.routing import Route

    served: list[set[str]] = []

    def run(app: Any, **_: object) -> None:
        routes = {route.path for route in app.router.routes if isinstance(route, Route)}
        served.append(routes | set(app.data_plane))

    monkeypatch.setattr(uvicorn, "run", run)

    result = succeeded(keyhouse("serve", "--plane", plane))

    [paths] = served
    assert ("/graphql" in paths) is (plane != "data")
    assert ("/v1/keys/verify" in paths) is (plane != "control")
    assert ("/graphql" in one_line(result.stdout)) is (plane != "data")


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db", "postgres://keyhouse:hunter2@127.0.0.1/x", "mysql://x/y"]
)
@pytest.mark.parametrize("command", [["keys", "list", "--organization", "org_x"], ["serve"]])
def test_a_database_url_keyhouse_cannot_use_is_one_line_naming_the_accepted_forms(
    url: str, command: list[str]
) -> None:
    env = {**environment_without_settings(), "KEYHOUSE_DATABASE_URL": url}

    done = subprocess.run(
        [*keyhouse_command(), *command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "KEYHOUSE_DATABASE_URL" in lines[0]
    assert "sqlite+aiosqlite:///" in lines[0]
    assert "postgresql+asyncpg://" in lines[0]
    assert "hunter2" not in done.stderr


@both_databases
def test_orgs_list_shows_every_organization_with_its_id(cli_database: str) -> None:
    succeeded(keyhouse("init", "--organization", "Acme", "--json"))
    succeeded(keyhouse("orgs", "create", "Globex", "--json"))

    listed = json.loads(succeeded(keyhouse("orgs", "list", "--json")).stdout)

    assert [row["name"] for row in listed] == ["Acme", "Globex"]
    assert all(row["id"].startswith("org_") for row in listed)
    table = succeeded(keyhouse("orgs", "list")).stdout
    assert listed[0]["id"] in table
