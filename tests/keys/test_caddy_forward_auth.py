"""A real Caddy in front of a tiny upstream, asking keyhouse (``GET /v1/auth``) about every request
through ``forward_auth``.

Caddy runs deploy/caddy/Caddyfile as it is, imported by a Caddyfile of the test's own that turns
off automatic HTTPS and the admin endpoint (so Caddy never reaches for a certificate or a port
shared with other runs) and gives the site a plain ``http://`` address. keyhouse and the echoing
upstream are those of tests/keys/test_nginx_forward_auth.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.secret import generate_secret
from tests.conftest import REQUIRE_SERVICES
from tests.keys.test_nginx_forward_auth import (
    RATE_LIMIT,
    EchoServer,
    echo_upstream,
    keyhouse_env,
    upstream_saw,
)
from tests.processes import (
    answers,
    free_port,
    healthy,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found is not None:
        return found
    reason = "Caddy is not installed (Debian package: caddy)"
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (KEYHOUSE_TEST_REQUIRE_SERVICES=1: this must not be skipped)")
    pytest.skip(reason)


@contextmanager
def running_caddy(home: Path, keyhouse: str, upstream: str) -> Iterator[str]:
    """Caddy serving the deploy/caddy site on a port of its own, its files under ``home``."""
    binary = caddy_binary()
    home.mkdir()
    port = free_port()
    config = home / "Caddyfile"
    config.write_text(f"{{\n\tauto_https off\n\tadmin off\n}}\n\nimport {CADDYFILE}\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        # Caddy keeps its data and configuration under these: the test's own directory.
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "SITE_ADDRESS": f"http://127.0.0.1:{port}",
        "KEYHOUSE": keyhouse,
        "UPSTREAM": upstream,
    }
    log = home / "caddy.log"
    command = [binary, "run", "--config", str(config), "--adapter", "caddyfile"]
    with started(command, log, env=env) as process:
        wait_until(lambda: answers(port), process, "caddy", log)
        yield f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Stack:
    gateway: httpx.Client  # Caddy
    upstream: EchoServer
    organization_id: str
    reader_key: str  # read:charge_points
    reader_key_id: str
    billing_key: str  # read:billing only
    throttled_key: str  # read:charge_points, used by the rate-limit test alone


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    caddy_binary()  # skip (or fail) before doing any work
    tmp = tmp_path_factory.mktemp("caddy_forward_auth")
    env = keyhouse_env(tmp / "keyhouse.db")
    organization = keyhouse_json(env, "init", "--organization", "Acme")["organizationId"]

    def create(name: str, scope: str) -> dict[str, str]:
        return keyhouse_json(
            env, "keys", "create", "--organization", organization, "--name", name, "--scope", scope
        )

    reader = create("reader", "read:charge_points")
    billing = create("billing", "read:billing")
    throttled = create("throttled", "read:charge_points")

    with ExitStack() as stack:
        port = free_port()
        log = tmp / "keyhouse.log"
        command = [*keyhouse_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        keyhouse = stack.enter_context(started(command, log, env=env, cwd=ROOT))
        wait_until(lambda: healthy(f"http://127.0.0.1:{port}"), keyhouse, "keyhouse serve", log)
        upstream = stack.enter_context(echo_upstream())
        gateway_url = stack.enter_context(
            running_caddy(tmp / "caddy", f"127.0.0.1:{port}", upstream.address)
        )
        gateway = stack.enter_context(
            httpx.Client(base_url=gateway_url, timeout=10, trust_env=False)
        )
        yield Stack(
            gateway=gateway,
            upstream=upstream,
            organization_id=organization,
            reader_key=reader["apiKey"],
            reader_key_id=reader["id"],
            billing_key=billing["apiKey"],
            throttled_key=throttled["apiKey"],
        )


def assert_refused(
    stack: Stack, response: httpx.Response, status: int, code: str, seen_before: int
) -> dict[str, Any]:
    """Caddy's answer is keyhouse's, JSON body included, and the API never saw the request."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert (body["code"], bool(body["message"]), bool(body["hint"])) == (code, True, True)
    assert len(stack.upstream.seen) == seen_before
    return body


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_a_valid_key_reaches_the_upstream_with_its_identity_and_without_the_key(
    stack: Stack, header: str
) -> None:
    value = stack.reader_key if header == "X-API-Key" else f"Bearer {stack.reader_key}"

    response = stack.gateway.get(
        "/charge_points",
        params={"output": "json"},
        # A client cannot pass itself off as another key.
        headers={header: value, "X-Api-Key-Id": "key_forged", "X-Organization-Id": "org_x"},
    )

    seen = upstream_saw(response)
    assert seen["path"] == "/charge_points?output=json"
    assert seen["headers"]["x-api-key-id"] == stack.reader_key_id
    assert seen["headers"]["x-organization-id"] == stack.organization_id
    assert seen["headers"]["x-api-key-scopes"] == "read:charge_points"
    assert "x-api-key" not in seen["headers"]
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "MISSING", id="missing"),
        pytest.param({"X-API-Key": "kh_nope"}, "MALFORMED", id="malformed"),
        pytest.param({"X-API-Key": generate_secret("kh")}, "UNKNOWN", id="unknown"),
    ],
)
def test_a_request_without_a_usable_key_gets_401_with_the_reason(
    stack: Stack, headers: dict[str, str], code: str
) -> None:
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get("/charge_points", headers=headers)

    assert_refused(stack, response, 401, code, seen_before)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_key_without_the_scope_gets_403(stack: Stack) -> None:
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get("/charge_points", headers={"X-API-Key": stack.billing_key})

    body = assert_refused(stack, response, 403, "INSUFFICIENT_SCOPE", seen_before)
    assert "read:charge_points" in body["message"]


def test_a_rate_limited_key_gets_429_with_retry_after(stack: Stack) -> None:
    headers = {"X-API-Key": stack.throttled_key}
    for _ in range(RATE_LIMIT):
        upstream_saw(stack.gateway.get("/charge_points", headers=headers))
    seen_before = len(stack.upstream.seen)

    response = stack.gateway.get("/charge_points", headers=headers)

    body = assert_refused(stack, response, 429, "RATE_LIMITED", seen_before)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert body["hint"].startswith("Retry after")


def test_caddy_fails_closed_when_keyhouse_does_not_answer(tmp_path: Path) -> None:
    with (
        echo_upstream() as upstream,
        running_caddy(tmp_path / "caddy", f"127.0.0.1:{free_port()}", upstream.address) as url,
        httpx.Client(base_url=url, timeout=10, trust_env=False) as gateway,
    ):
        response = gateway.get("/charge_points", headers={"X-API-Key": generate_secret("kh")})

        assert response.status_code == 502
        assert upstream.seen == []
