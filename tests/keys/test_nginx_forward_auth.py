"""A real nginx in front of a tiny upstream, asking keyhouse (``GET /v1/auth``) about every request.

The nginx configuration is deploy/nginx/keyhouse.conf, the README's example, with only its
placeholders filled in. keyhouse runs as ``keyhouse serve`` on a SQLite file set up by
``keyhouse init`` and ``keyhouse keys create``, with a default rate limit of 5 requests per
minute. The upstream echoes what it received, so the tests see which identity headers reached it
and that the client's key did not.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import string
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.secret import generate_secret
from tests.conftest import REQUIRE_SERVICES
from tests.processes import (
    STOP_SECONDS,
    answers,
    environment_without_settings,
    free_port,
    healthy,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "keyhouse.conf"
RATE_LIMIT = 5


# --- processes -----------------------------------------------------------------------------


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is not None:
        return found
    reason = "nginx is not installed (Debian package: nginx)"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (KEYHOUSE_TEST_REQUIRE_SERVICES=1: this must not be skipped)")
    pytest.skip(reason)


def keyhouse_env(database: Path) -> dict[str, str]:
    # Nothing from the developer's own KEYHOUSE_* settings (Redis, a service token...) leaks in.
    env = environment_without_settings()
    env.update(
        KEYHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        KEYHOUSE_DEFAULT_RATE_LIMIT_REQUESTS=str(RATE_LIMIT),
        KEYHOUSE_DEFAULT_RATE_LIMIT_PER_SECONDS="60",
        KEYHOUSE_LOG_LEVEL="WARNING",
        # nginx, in front, says where a client came from (deploy/nginx sets X-Real-IP and
        # X-Forwarded-For on the auth subrequest).
        KEYHOUSE_TRUSTED_PROXIES="127.0.0.1",
        # Uses reach the database soon after they happen, for the usage-label test.
        KEYHOUSE_USAGE_FLUSH_INTERVAL_SECONDS="0.2",
    )
    return env


# --- the upstream: echoes what it received --------------------------------------------------


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.seen: list[dict[str, Any]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class EchoHandler(BaseHTTPRequestHandler):
    server: EchoServer

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body,
        }
        self.server.seen.append(seen)
        payload = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    # http.server's names for the handlers of each method.
    do_GET = _echo  # noqa: N815
    do_POST = _echo  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def echo_upstream() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=STOP_SECONDS)
        server.server_close()


# --- nginx ------------------------------------------------------------------------------------


def render_site(listen: str, keyhouse: str, upstream: str) -> str:
    """deploy/nginx/keyhouse.conf with its ${listen}, ${keyhouse} and ${upstream} filled in.

    ``safe_substitute`` leaves nginx's own ``$variables`` alone; the check below catches a
    misspelt placeholder."""
    site = string.Template(NGINX_TEMPLATE.read_text()).safe_substitute(
        listen=listen, keyhouse=keyhouse, upstream=upstream
    )
    config = "\n".join(line for line in site.splitlines() if not line.lstrip().startswith("#"))
    assert "${" not in config, "a placeholder in deploy/nginx/keyhouse.conf was not filled in"
    return site


@contextmanager
def running_nginx(prefix: Path, keyhouse: str, upstream: str) -> Iterator[str]:
    """nginx with the example site, on its own port, logs and temp files under ``prefix``."""
    binary = nginx_binary()
    prefix.mkdir()
    port = free_port()
    site = prefix / "keyhouse.conf"
    site.write_text(render_site(f"127.0.0.1:{port}", keyhouse, upstream))
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, workers would run as nobody and could not reach pytest's private temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(
        f"""{user}
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{
    worker_connections 64;
}}
http {{
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""
    )
    log = prefix / "nginx.out"
    command = [
        binary,
        "-p",
        str(prefix),
        "-c",
        str(main),
        "-e",
        str(prefix / "error.log"),
        "-g",
        "daemon off;",
    ]
    with started(command, log) as process:
        wait_until(lambda: answers(port), process, "nginx", prefix / "error.log")
        yield f"http://127.0.0.1:{port}"


# --- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    gateway: httpx.Client  # nginx
    upstream: EchoServer
    organization_id: str
    admin_key: str
    reader_key: str  # read:charge_points
    reader_key_id: str
    billing_key: str  # read:billing only
    throttled_key: str  # read:charge_points, used by the rate-limit test alone
    throttled_key_id: str
    labelled_key: str  # read:charge_points, used by the usage-label test alone
    labelled_key_id: str
    local_key: str  # read:charge_points, usable from 127.0.0.0/8 only
    elsewhere_key: str  # read:charge_points, usable from 203.0.113.0/24 only
    database: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx_binary()  # skip (or fail) before doing any work
    tmp = tmp_path_factory.mktemp("nginx_forward_auth")
    env = keyhouse_env(tmp / "keyhouse.db")

    initial = keyhouse_json(env, "init", "--organization", "Acme")
    organization = initial["organizationId"]

    def create(name: str, *scopes: str) -> dict[str, str]:
        options = [item for scope in scopes for item in ("--scope", scope)]
        return keyhouse_json(
            env, "keys", "create", "--organization", organization, "--name", name, *options
        )

    reader = create("reader", "read:charge_points")
    billing = create("billing", "read:billing")
    throttled = create("throttled", "read:charge_points")
    labelled = create("labelled", "read:charge_points")
    local = create("local", "read:charge_points")
    elsewhere = create("elsewhere", "read:charge_points")

    with ExitStack() as stack:
        port = free_port()
        log = tmp / "keyhouse.log"
        keyhouse = stack.enter_context(
            started(
                [*keyhouse_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                log,
                env=env,
                cwd=ROOT,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), keyhouse, "keyhouse serve", log)
        fence(url, initial["apiKey"], local["id"], "127.0.0.0/8")
        fence(url, initial["apiKey"], elsewhere["id"], "203.0.113.0/24")

        upstream = stack.enter_context(echo_upstream())
        gateway_url = stack.enter_context(
            running_nginx(tmp / "nginx", f"127.0.0.1:{port}", upstream.address)
        )
        gateway = stack.enter_context(
            httpx.Client(base_url=gateway_url, timeout=10, trust_env=False)
        )
        yield Stack(
            gateway=gateway,
            upstream=upstream,
            organization_id=organization,
            admin_key=initial["apiKey"],
            reader_key=reader["apiKey"],
            reader_key_id=reader["id"],
            billing_key=billing["apiKey"],
            throttled_key=throttled["apiKey"],
            throttled_key_id=throttled["id"],
            labelled_key=labelled["apiKey"],
            labelled_key_id=labelled["id"],
            local_key=local["apiKey"],
            elsewhere_key=elsewhere["apiKey"],
            database=tmp / "keyhouse.db",
        )


def fence(url: str, admin_key: str, key_id: str, network: str) -> None:
    """Give a key an IP allowlist, through keyhouse's GraphQL API."""
    response = httpx.post(
        f"{url}/graphql",
        json={
            "query": "mutation($input: UpdateApiKeyInput!) "
            "{ updateApiKey(input: $input) { userErrors { message } } }",
            "variables": {"input": {"id": key_id, "ipAllowlist": [network]}},
        },
        headers={"X-API-Key": admin_key},
        trust_env=False,
    )
    assert response.json()["data"]["updateApiKey"]["userErrors"] == [], response.text


# --- helpers --------------------------------------------------------------------------------


def upstream_saw(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    seen: dict[str, Any] = response.json()
    return seen


def assert_refused(
    stack: Stack, response: httpx.Response, status: int, code: str, seen_before: int
) -> dict[str, Any]:
    """nginx's answer carries keyhouse's explanation as a JSON body, and the API never saw it."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["message"]
    assert body["hint"]
    # The header that carried it from keyhouse to nginx stays between them.
    assert "X-Keyhouse-Error" not in response.headers
    assert len(stack.upstream.seen) == seen_before
    return body


# --- allowed --------------------------------------------------------------------------------


def test_a_valid_key_reaches_the_upstream_with_its_identity(stack: Stack) -> None:
    response = stack.gateway.get(
        "/charge_points",
        params={"output": "json"},
        # A client cannot pass itself off as another key.
        headers={"X-API-Key": stack.reader_key, "X-Api-Key-Id": "key_forged"},
    )

    seen = upstream_saw(response)
    assert seen["path"] == "/charge_points?output=json"
    assert seen["headers"]["x-api-key-id"] == stack.reader_key_id
    assert seen["headers"]["x-organization-id"] == stack.organization_id
    assert seen["headers"]["x-api-key-scopes"] == "read:charge_points"
    assert "x-api-key" not in seen["headers"]  # the secret stays at the gateway
    assert response.headers["X-RateLimit-Limit"] == str(RATE_LIMIT)
    assert int(response.headers["X-RateLimit-Remaining"]) < RATE_LIMIT


def test_a_bearer_key_is_accepted_and_not_passed_on(stack: Stack) -> None:
    response = stack.gateway.get(
        "/charge_points", headers={"Authorization": f"Bearer {stack.reader_key}"}
    )

    seen = upstream_saw(response)
    assert seen["headers"]["x-api-key-id"] == stack.reader_key_id
    assert "authorization" not in seen["headers"]


def test_a_key_in_the_query_string_is_accepted(stack: Stack) -> None:
    # nginx sends the original URI (X-Original-URI); keyhouse finds the key in its query.
    response = stack.gateway.get("/charge_points", params={"key": stack.admin_key})

    seen = upstream_saw(response)
    assert seen["headers"]["x-organization-id"] == stack.organization_id
    assert seen["headers"]["x-api-key-id"].startswith("key_")
    assert "read:charge_points" in seen["headers"]["x-api-key-scopes"].split()


def test_the_request_body_reaches_the_upstream_intact(stack: Stack) -> None:
    # The auth subrequest goes without the body; the API still gets all of it.
    payload = {"name": "CP-1", "connectors": list(range(100))}
    response = stack.gateway.post(
        "/charge_points", json=payload, headers={"X-API-Key": stack.reader_key}
    )

    seen = upstream_saw(response)
    assert seen["method"] == "POST"
    assert json.loads(seen["body"]) == payload


# --- unauthorized and forbidden -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "code"),
    [
        pytest.param("/charge_points", {}, "MISSING", id="missing"),
        # The key pasted into the path never arrives; the hint explains '?' and '&'.
        pytest.param("/charge_points/key/abc&output=json", {}, "MISSING", id="key-in-path"),
        pytest.param("/charge_points", {"X-API-Key": "kh_nope"}, "MALFORMED", id="malformed"),
        pytest.param(
            "/charge_points", {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"},
            "LOOKS_LIKE_JWT", id="jwt",
        ),
        pytest.param(
            "/charge_points", {"X-API-Key": generate_secret("kh")}, "UNKNOWN", id="unknown"
        ),
    ],
)  # fmt: skip
def test_a_request_without_a_usable_key_gets_401_with_the_reason(
    stack: Stack, path: str, headers: dict[str, str], code: str
) -> None:
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get(path, headers=headers)

    body = assert_refused(stack, response, 401, code, seen_before)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if path.endswith("&output=json"):
        assert "'?'" in body["hint"]


def test_a_key_without_the_scope_gets_403(stack: Stack) -> None:
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get("/charge_points", headers={"X-API-Key": stack.billing_key})

    body = assert_refused(stack, response, 403, "INSUFFICIENT_SCOPE", seen_before)
    assert "read:charge_points" in body["message"]
    assert "Retry-After" not in response.headers


# --- rate limited ---------------------------------------------------------------------------


def test_a_rate_limited_key_gets_429_with_retry_after_through_nginx(stack: Stack) -> None:
    headers = {"X-API-Key": stack.throttled_key}
    for used in range(1, RATE_LIMIT + 1):
        response = stack.gateway.get("/charge_points", headers=headers)
        assert upstream_saw(response)["headers"]["x-api-key-id"] == stack.throttled_key_id
        assert response.headers["X-RateLimit-Remaining"] == str(RATE_LIMIT - used)
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get("/charge_points", headers=headers)

    body = assert_refused(stack, response, 429, "RATE_LIMITED", seen_before)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert body["hint"].startswith("Retry after")
    assert response.headers["X-RateLimit-Limit"] == str(RATE_LIMIT)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    # Another key of the same organization has its own budget.
    assert stack.gateway.get("/", headers={"X-API-Key": stack.reader_key}).status_code == 200


# --- usage labels ---------------------------------------------------------------------------


def stored_labels(database: Path, key_id: str) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT operation, SUM(count) FROM usage_buckets"
            " WHERE api_key_id = ? AND granularity = 'MINUTE' GROUP BY operation",
            (key_id,),
        ).fetchall()
    return {operation: int(count) for operation, count in rows}


def test_a_use_is_counted_under_the_locations_operation_name_not_the_clients(
    stack: Stack,
) -> None:
    headers = {"X-API-Key": stack.labelled_key, "X-Keyhouse-Operation": "forged"}
    for poi in (123, 124):
        upstream_saw(stack.gateway.get(f"/poi/{poi}", headers=headers))

    deadline = time.monotonic() + 10
    labels = stored_labels(stack.database, stack.labelled_key_id)
    while sum(labels.values()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        labels = stored_labels(stack.database, stack.labelled_key_id)

    assert labels == {"GET charge-points": 2}


# --- keyhouse unreachable -------------------------------------------------------------------


def test_nginx_fails_closed_with_503_when_keyhouse_does_not_answer(tmp_path: Path) -> None:
    with (
        echo_upstream() as upstream,
        running_nginx(tmp_path / "nginx", f"127.0.0.1:{free_port()}", upstream.address) as url,
        httpx.Client(base_url=url, timeout=10, trust_env=False) as gateway,
    ):
        response = gateway.get("/charge_points", headers={"X-API-Key": generate_secret("kh")})

        assert response.status_code == 503, response.text
        assert response.json()["code"] == "UNAVAILABLE"
        assert response.headers["Retry-After"] == "5"
        assert upstream.seen == []


def test_the_readme_shows_the_tested_configuration() -> None:
    """The README's nginx example is deploy/nginx/keyhouse.conf without its comment lines."""
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("```nginx\n", 1)[1].split("\n```", 1)[0]
    tested = [
        line
        for line in NGINX_TEMPLATE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    assert [line for line in shown.splitlines() if line.strip()] == tested


# --- IP allowlists --------------------------------------------------------------------------


def test_a_key_used_from_its_allowed_network_passes_the_gateway(stack: Stack) -> None:
    response = stack.gateway.get("/charge_points", headers={"X-API-Key": stack.local_key})

    assert upstream_saw(response)["headers"]["x-api-key-id"]


def test_a_client_claiming_an_allowed_address_in_its_own_headers_is_refused(
    stack: Stack,
) -> None:
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get(
        "/charge_points",
        headers={
            "X-API-Key": stack.elsewhere_key,
            "X-Forwarded-For": "203.0.113.7",
            "X-Real-IP": "203.0.113.7",
        },
    )

    body = assert_refused(stack, response, 403, "IP_NOT_ALLOWED", seen_before)
    assert "127.0.0.1" in body["message"]
