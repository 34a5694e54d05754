"""keyhouse scaled out: instances as real processes sharing one PostgreSQL database and one Redis.

Each instance is ``keyhouse serve`` on its own loopback port. A and B serve a fresh database set
up by ``keyhouse init``; C and D are started at the same moment on another, empty one (their
first start), and count usage for the exactness test.

The verification cache keeps entries far longer than these tests run (also without the
broadcast), so instance B can only learn of a change made through instance A from the Redis
broadcast, never from an entry expiring: once B has answered VALID for a key, the key is in B's
cache.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from subprocess import Popen
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import REDIS_URL, fresh_postgres_database, require_redis
from tests.processes import (
    ROOT,
    STOP_SECONDS,
    environment_without_settings,
    free_port,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)
from tests.support import IssuedKey, gql

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

Endpoint = Literal["verify", "auth"]
ENDPOINTS: tuple[Endpoint, ...] = ("verify", "auth")

CREATE_KEY = """
mutation CreateKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey { id rateLimit { requests perSeconds } }
    secret
    userErrors { code field message }
  }
}
"""

REVOKE_KEY = """
mutation RevokeKey($id: ID!) {
  revokeApiKey(id: $id) {
    apiKey { id status }
    userErrors { code field message }
  }
}
"""

ROTATE_KEY = """
mutation RotateKey($input: RotateApiKeyInput!) {
  rotateApiKey(input: $input) {
    apiKey { id status }
    secret
    previousApiKey { id status }
    userErrors { code field message }
  }
}
"""


# --- the instances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """A fresh database, set up by ``keyhouse init``, and the settings every instance shares."""

    env: dict[str, str]
    database_url: str
    directory: Path


@dataclass(frozen=True)
class Instance:
    name: str
    url: str
    process: Popen[bytes]
    log: Path

    def output(self) -> str:
        return f"--- instance {self.name} ({self.log}) ---\n{self.log.read_text()}"


@dataclass(frozen=True)
class Organization:
    id: str
    admin_key: str


def ready(url: str) -> bool:
    """Ready and sharing state through Redis: rate limits counted there, broadcast subscribed
    (a change announced before the subscription would be missed)."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=0.5, trust_env=False)
    except httpx.TransportError:
        return False
    if response.status_code != 200:
        return False
    checks = response.json()["checks"]
    shared: bool = (
        checks.get("rateLimits") == "redis" and checks.get("revocationBroadcast") == "live"
    )
    return shared


@contextmanager
def running_instances(
    deployment: Deployment, *names: str, **settings: str
) -> Iterator[list[Instance]]:
    """``keyhouse serve`` once per name, started together; each is stopped on exit."""
    env = {**deployment.env, **settings}
    with ExitStack() as stack:
        instances = []
        for name in names:
            port = free_port()
            log = deployment.directory / f"instance-{name}-{port}.log"
            command = [*keyhouse_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
            process = stack.enter_context(started(command, log, env=env, cwd=ROOT))
            instances.append(Instance(name, f"http://127.0.0.1:{port}", process, log))
        for instance in instances:
            what = f"keyhouse instance {instance.name}"
            wait_until(partial(ready, instance.url), instance.process, what, instance.log)
        yield instances


def shut_down(instances: Sequence[Instance]) -> None:
    """SIGTERM to all of them at once, as an orchestrator does; each must exit cleanly."""
    for instance in instances:
        instance.process.send_signal(signal.SIGTERM)
    for instance in instances:
        returncode = instance.process.wait(timeout=STOP_SECONDS * 2)
        # uvicorn re-raises the signal once its shutdown is complete (-15 on POSIX), so that a
        # supervisor sees why the process ended; the log says the shutdown (and flush) ran.
        assert returncode in (0, -signal.SIGTERM), instance.output()
        assert "Application shutdown complete" in instance.log.read_text(), instance.output()


@contextmanager
def new_deployment(directory: Path, **settings: str) -> Iterator[Deployment]:
    """A fresh, empty PostgreSQL database and the shared Redis."""
    require_redis()
    with fresh_postgres_database() as database_url:
        env = environment_without_settings()
        env.update(
            KEYHOUSE_DATABASE_URL=database_url,
            KEYHOUSE_REDIS_URL=REDIS_URL,
            # Only the broadcast can tell B about a change made on A (see the module docstring).
            KEYHOUSE_CACHE_TTL_SECONDS="3600",
            KEYHOUSE_CACHE_TTL_WITHOUT_BROADCAST_SECONDS="3600",
            KEYHOUSE_LOG_LEVEL="INFO",
            **settings,
        )
        yield Deployment(env, database_url, directory)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with new_deployment(tmp_path_factory.mktemp("instances")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def organization(deployment: Deployment) -> Organization:
    # `init` migrates the empty database, as an operator's first command would.
    created = keyhouse_json(deployment.env, "init", "--organization", "Acme")
    return Organization(created["organizationId"], created["apiKey"])


@pytest.fixture(scope="module")
def pair(deployment: Deployment, organization: Organization) -> Iterator[tuple[Instance, Instance]]:
    with running_instances(deployment, "A", "B") as (a, b):
        yield a, b


@dataclass(frozen=True)
class Clients:
    a: httpx.AsyncClient
    b: httpx.AsyncClient


def assert_no_errors_logged(instances: Sequence[Instance], since: dict[str, int]) -> None:
    """Nothing the test did made an instance log an error (a 500 would show up here)."""
    for instance in instances:
        output = instance.log.read_text()[since.get(instance.name, 0) :]
        assert "Traceback" not in output, instance.output()
        assert " ERROR " not in output, instance.output()


def log_positions(instances: Sequence[Instance]) -> dict[str, int]:
    return {instance.name: len(instance.log.read_text()) for instance in instances}


@pytest.fixture
async def clients(pair: tuple[Instance, Instance]) -> AsyncIterator[Clients]:
    a, b = pair
    before = log_positions(pair)
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10, trust_env=False) as client_a,
        httpx.AsyncClient(base_url=b.url, timeout=10, trust_env=False) as client_b,
    ):
        yield Clients(client_a, client_b)
    assert_no_errors_logged(pair, before)


async def query(database_url: str, sql: str, **params: str) -> list[tuple[Any, ...]]:
    """Rows straight from the shared database, as a third party sees them."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in await connection.execute(text(sql), params)]
    finally:
        await engine.dispose()


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    code: str
    status: int
    key_id: str | None
    body: dict[str, Any]


async def check(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    key: str,
    scopes: Sequence[str] = (),
    operation: str = "test",
) -> Answer:
    """One verification, through ``POST /v1/keys/verify`` or ``GET /v1/auth``."""
    if endpoint == "verify":
        response = await client.post(
            "/v1/keys/verify", json={"key": key, "scopes": list(scopes), "operation": operation}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["valid"] is (body["code"] == "VALID"), body
        return Answer(body["code"], response.status_code, body["keyId"], body)
    response = await client.get(
        "/v1/auth",
        params=[("scope", scope) for scope in scopes],
        headers={"X-API-Key": key, "X-Original-URI": f"/{operation}"},
    )
    if response.status_code == 200:
        return Answer("VALID", 200, response.headers["X-Api-Key-Id"], {})
    body = response.json()
    assert response.headers["X-Keyhouse-Code"] == body["code"], response.headers
    return Answer(body["code"], response.status_code, None, body)


async def create_key(
    client: httpx.AsyncClient,
    admin_key: str,
    name: str,
    scopes: Sequence[str] = ("read:charge_points",),
    *,
    rate_limit: tuple[int, int] | None = None,
) -> IssuedKey:
    data: dict[str, Any] = {"name": name, "scopes": list(scopes)}
    if rate_limit is not None:
        data["rateLimit"] = {"requests": rate_limit[0], "perSeconds": rate_limit[1]}
    result = await gql(client, CREATE_KEY, {"input": data}, key=admin_key)
    assert result.errors == [], result.body
    payload = result.data["createApiKey"]
    assert payload["userErrors"] == [], payload
    return IssuedKey(payload["apiKey"]["id"], payload["secret"], "")


async def revoke_key(client: httpx.AsyncClient, admin_key: str, key_id: str) -> None:
    result = await gql(client, REVOKE_KEY, {"id": key_id}, key=admin_key)
    assert result.errors == [], result.body
    payload = result.data["revokeApiKey"]
    assert payload["userErrors"] == [], payload
    assert payload["apiKey"]["status"] == "REVOKED", payload


# --- revocation -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_key_revoked_on_a_is_refused_on_b_at_the_very_next_request(
    clients: Clients, organization: Organization, endpoint: Endpoint
) -> None:
    key = await create_key(clients.a, organization.admin_key, f"revoked-through-{endpoint}")
    # Verified on both instances: B now holds it, as VALID, in its cache.
    for client in (clients.b, clients.a, clients.b):
        assert (await check(client, endpoint, key.secret)).code == "VALID"

    await revoke_key(clients.a, organization.admin_key, key.id)

    answer = await check(clients.b, endpoint, key.secret)
    assert answer.code == "REVOKED", answer
    assert "revoked at" in answer.body["message"]
    if endpoint == "auth":
        assert answer.status == 401
        assert answer.body["hint"]
    # And both instances keep refusing it.
    for client in (clients.a, clients.b):
        assert (await check(client, endpoint, key.secret)).code == "REVOKED"


# --- one rate-limit budget ------------------------------------------------------------------------


async def test_a_keys_rate_limit_is_one_budget_shared_by_both_instances(
    clients: Clients, organization: Organization
) -> None:
    limit, attempts = 10, 40
    key = await create_key(
        clients.a, organization.admin_key, "shared-budget", rate_limit=(limit, 60)
    )
    instances = (clients.a, clients.b)

    # Alternating, one at a time: each instance sees what the other has spent.
    alternating = limit // 2
    for used in range(1, alternating + 1):
        answer = await check(instances[used % 2], "verify", key.secret)
        assert answer.code == "VALID", answer
        assert answer.body["ratelimit"]["limit"] == limit
        assert answer.body["ratelimit"]["remaining"] == limit - used

    # Then all at once on both instances, through both endpoints.
    answers = await asyncio.gather(
        *(
            check(instances[i % 2], ENDPOINTS[i // 2 % 2], key.secret)
            for i in range(attempts - alternating)
        )
    )
    codes = Counter(answer.code for answer in answers)
    assert codes == {"VALID": limit - alternating, "RATE_LIMITED": attempts - limit}, codes
    for answer in answers:
        if answer.code == "RATE_LIMITED" and answer.status == 429:  # /v1/auth
            assert answer.body["hint"].startswith("Retry after")

    # The budget is spent on both instances.
    for client in instances:
        for endpoint in ENDPOINTS:
            assert (await check(client, endpoint, key.secret)).code == "RATE_LIMITED"


# --- rotation -----------------------------------------------------------------------------------


async def test_a_key_rotated_on_a_without_grace_is_superseded_on_b_at_the_next_request(
    clients: Clients, organization: Organization
) -> None:
    old = await create_key(clients.a, organization.admin_key, "rotated")
    for client in (clients.b, clients.a, clients.b):
        assert (await check(client, "verify", old.secret)).code == "VALID"

    result = await gql(
        clients.a,
        ROTATE_KEY,
        {"input": {"id": old.id, "gracePeriodHours": 0}},
        key=organization.admin_key,
    )

    assert result.errors == [], result.body
    payload = result.data["rotateApiKey"]
    assert payload["userErrors"] == [], payload
    assert payload["previousApiKey"] == {"id": old.id, "status": "SUPERSEDED"}
    new_id, new_secret = payload["apiKey"]["id"], payload["secret"]
    answer = await check(clients.b, "verify", old.secret)
    assert answer.code == "SUPERSEDED", answer
    assert "rotated" in answer.body["message"]  # names the replacement
    answer = await check(clients.b, "auth", old.secret)
    assert (answer.code, answer.status) == ("SUPERSEDED", 401), answer
    for endpoint in ENDPOINTS:
        answer = await check(clients.b, endpoint, new_secret)
        assert (answer.code, answer.key_id) == ("VALID", new_id), answer
        assert (await check(clients.a, endpoint, old.secret)).code == "SUPERSEDED"


# --- starting together on an empty database ------------------------------------------------------

# C and D flush usage early once this many distinct buckets wait in memory, and otherwise only at
# shutdown: the usage test's load fills that buffer many times over on each of them.
FLUSH_MAX_BUCKETS = 6


@dataclass(frozen=True)
class FirstStart:
    deployment: Deployment
    instances: tuple[Instance, Instance]


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstStart]:
    """C and D, started at the same moment on an empty database, as an orchestrator starts a
    new deployment scaled out: both migrate it and look for a first organization at once."""
    with (
        new_deployment(
            tmp_path_factory.mktemp("first_start"),
            KEYHOUSE_USAGE_FLUSH_INTERVAL_SECONDS="3600",
            KEYHOUSE_USAGE_FLUSH_MAX_BUCKETS=str(FLUSH_MAX_BUCKETS),
        ) as deployment,
        running_instances(deployment, "C", "D") as (c, d),
    ):
        yield FirstStart(deployment, (c, d))


def first_admin_key(instances: Sequence[Instance]) -> str:
    """The admin key of the first organization: printed once, by the instance that created it."""
    printed: list[str] = [
        found
        for instance in instances
        for found in re.findall(r"^\s+(kh_[0-9A-Za-z]+)\s*$", instance.log.read_text(), re.M)
    ]
    assert len(printed) == 1, "\n".join(instance.output() for instance in instances)
    return printed[0]


def test_instances_started_together_on_an_empty_database_share_one_first_organization(
    first_start: FirstStart,
) -> None:
    instances = first_start.instances
    database_url = first_start.deployment.database_url

    organizations = asyncio.run(query(database_url, "SELECT name FROM organizations"))

    # Neither failed on the other's migrations (both are up), and one created the organization.
    assert organizations == [("Default organization",)], organizations
    first = [instance.name for instance in instances if "First start" in instance.log.read_text()]
    assert len(first) == 1, "\n".join(instance.output() for instance in instances)
    assert_no_errors_logged(instances, {})


# --- exact usage ----------------------------------------------------------------------------------


class Load:
    """Sends verifications and remembers, per key and outcome, what the instances answered."""

    def __init__(self) -> None:
        self.expected: Counter[tuple[str, str]] = Counter()
        self.key_ids: dict[str, str] = {}  # secret -> key id
        self._slots = asyncio.Semaphore(16)

    async def check(
        self,
        client: httpx.AsyncClient,
        endpoint: Endpoint,
        key: str,
        scopes: Sequence[str],
        operation: str = "load",
    ) -> None:
        async with self._slots:
            answer = await check(client, endpoint, key, scopes, operation=operation)
        self.expected[(self.key_ids[key], answer.code)] += 1

    @property
    def total(self) -> int:
        return sum(self.expected.values())


async def stored_usage(database_url: str, organization_id: str) -> dict[str, Counter[Any]]:
    """Per granularity: the stored counts per (key id, outcome) of the organization."""
    rows = await query(
        database_url,
        "SELECT granularity, api_key_id, outcome, SUM(count) FROM usage_buckets"
        " WHERE organization_id = :organization GROUP BY granularity, api_key_id, outcome",
        organization=organization_id,
    )
    last_used = await query(
        database_url,
        "SELECT id FROM api_keys WHERE organization_id = :organization"
        " AND last_used_at IS NOT NULL",
        organization=organization_id,
    )
    stored: dict[str, Counter[Any]] = {"last_used": Counter(row[0] for row in last_used)}
    for granularity, key_id, outcome, count in rows:
        stored.setdefault(granularity, Counter())[(key_id, outcome)] = int(count)
    return stored


async def spread_load(c: Instance, d: Instance, admin_key: str, uses: int) -> Load:
    """Keys created and used on both instances: ``uses`` verifications of four keys, with every
    outcome a known key can have here, plus the admin key's own (counted) requests."""
    load = Load()
    async with (
        httpx.AsyncClient(base_url=c.url, timeout=10, trust_env=False) as client_c,
        httpx.AsyncClient(base_url=d.url, timeout=10, trust_env=False) as client_d,
    ):
        keys = [
            await create_key(client_c, admin_key, "reader", ["read:charge_points"]),
            await create_key(
                client_d, admin_key, "billing", ["read:charge_points", "read:billing"]
            ),
            await create_key(client_c, admin_key, "throttled", rate_limit=(7, 60)),
            await create_key(client_d, admin_key, "revoked"),
        ]
        await revoke_key(client_c, admin_key, keys[-1].id)
        load.key_ids = {key.secret: key.id for key in keys}
        # The admin key's id, from a verification of its own; each GraphQL request counts once.
        admin = await check(client_d, "verify", admin_key)
        assert admin.key_id is not None
        load.key_ids[admin_key] = admin.key_id
        load.expected[(admin.key_id, "VALID")] += 1 + len(keys) + 1

        clients = (client_c, client_d)
        await asyncio.gather(
            *(
                load.check(
                    clients[i // 4 % 2],
                    ENDPOINTS[i // 8 % 2],
                    keys[i % 4].secret,
                    ["read:billing"] if i % 3 == 0 else ["read:charge_points"],
                    operation=f"load-{i % 5}",
                )
                for i in range(uses)
            )
        )
        # Last, twice the same new bucket on each instance: if the first use filled the buffer
        # and set off an early flush, the second lands after it. Either way each instance ends
        # with uses that only its shutdown flush can write.
        for _ in range(2):
            for client in clients:
                await load.check(client, "verify", keys[0].secret, [], operation="tail")
    return load


async def test_usage_counted_on_both_instances_is_stored_exactly_after_a_graceful_shutdown(
    first_start: FirstStart,
) -> None:
    c, d = first_start.instances
    database_url = first_start.deployment.database_url
    ((organization_id,),) = await query(database_url, "SELECT id FROM organizations")
    uses = 400

    load = await spread_load(c, d, first_admin_key(first_start.instances), uses)
    await asyncio.sleep(0.2)  # early flushes still under way finish
    before = await stored_usage(database_url, organization_id)
    shut_down(first_start.instances)

    assert_no_errors_logged(first_start.instances, {})
    # Every outcome a known key can have here happened, so each one is checked below.
    outcomes = {outcome for _, outcome in load.expected}
    assert outcomes == {"VALID", "INSUFFICIENT_SCOPE", "RATE_LIMITED", "REVOKED"}, load.expected
    assert load.total == uses + 4 + 6
    # Both kinds of flush had their part: early ones during the load, the last at shutdown.
    assert 0 < before.get("MINUTE", Counter()).total() < load.total, before
    stored = await stored_usage(database_url, organization_id)
    for granularity in ("MINUTE", "HOUR", "DAY"):
        assert stored.get(granularity) == load.expected, (granularity, stored, load.expected)
    # last_used_at, written by the same flushes, for every key that authenticated.
    used = {key_id for key_id, outcome in load.expected if outcome == "VALID"}
    assert set(stored["last_used"]) == used


# --- suspension (the operator API) ------------------------------------------------------------

SUSPEND = """
mutation Suspend($id: ID!) {
  suspendOrganization(input: {id: $id, reason: "unpaid"}) { userErrors { code } }
}
"""
CREATE_ORGANIZATION = """
mutation Create($input: CreateOrganizationInput!) {
  createOrganization(input: $input) { organization { id } secret userErrors { code } }
}
"""


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_an_organization_suspended_on_a_is_refused_on_b_at_the_very_next_request(
    clients: Clients, deployment: Deployment, endpoint: Endpoint
) -> None:
    operator = keyhouse_json(deployment.env, "operator-keys", "create", "--name", endpoint)
    created = await gql(
        clients.a,
        CREATE_ORGANIZATION,
        {"input": {"name": "Customer", "externalId": f"suspended-{endpoint}"}},
        key=operator["operatorKey"],
    )
    payload = created.data["createOrganization"]
    admin_key = payload["secret"]
    for client in (clients.b, clients.a, clients.b):  # now in B's cache, as VALID
        assert (await check(client, endpoint, admin_key)).code == "VALID"

    suspended = await gql(
        clients.a,
        SUSPEND,
        {"id": payload["organization"]["id"]},
        key=operator["operatorKey"],
    )

    assert suspended.data == {"suspendOrganization": {"userErrors": []}}
    answer = await check(clients.b, endpoint, admin_key)
    assert answer.code == "ORGANIZATION_SUSPENDED", answer
    if endpoint == "auth":
        assert answer.status == 403
