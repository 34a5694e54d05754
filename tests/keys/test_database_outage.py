"""The database does not answer: every entry point says so (HTTP 503, ``UNAVAILABLE``,
``Retry-After``) instead of failing with an internal error, and keys already in the cache keep
working until their entry expires.

keyhouse reaches PostgreSQL through a TCP proxy that each test cuts and heals; the shared
server itself is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from app.runtime import Runtime
from tests.support import Tenant, gql, make_key, serving
from tests.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.postgres

# A short fallback TTL (there is no Redis here, so no broadcast): long enough for a test's few
# requests, short enough to watch an entry expire during the outage.
SHORT_TTL_SECONDS = 1.0


@pytest.fixture
def database_proxy(postgres_migrated: str) -> Iterator[TcpProxy]:
    with tcp_proxy(postgres_migrated) as proxy:
        yield proxy


@pytest.fixture
def database_url(postgres_migrated: str, database_proxy: TcpProxy) -> str:
    """Every fixture of conftest (runtime, app, client, tenant) goes through the proxy."""
    return database_proxy.url(postgres_migrated)


def assert_unavailable_headers(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers


async def test_verify_answers_503_unavailable_for_a_key_not_in_the_cache(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    database_proxy.cut()

    response = await client.post("/v1/keys/verify", json={"key": tenant.admin_key})

    assert_unavailable_headers(response)
    body = response.json()
    assert body["valid"] is False
    assert body["code"] == "UNAVAILABLE"
    assert "database is unavailable" in body["message"]
    assert body["hint"] == "Retry in 5 seconds."
    assert body["keyId"] is None
    assert body["ratelimit"] is None


async def test_verify_answers_for_the_key_again_once_the_database_is_back(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    database_proxy.cut()
    await client.post("/v1/keys/verify", json={"key": tenant.admin_key})
    database_proxy.heal()

    response = await client.post("/v1/keys/verify", json={"key": tenant.admin_key})

    assert response.status_code == 200
    assert response.json()["valid"] is True


async def test_forward_auth_answers_503_with_the_code_in_body_and_headers(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    database_proxy.cut()

    response = await client.get("/v1/auth", headers={"X-API-Key": tenant.admin_key})

    assert_unavailable_headers(response)
    assert response.json()["code"] == "UNAVAILABLE"
    assert response.headers["X-Keyhouse-Code"] == "UNAVAILABLE"
    assert response.headers["X-Keyhouse-Error"] == response.text
    assert "X-Api-Key-Id" not in response.headers


async def test_graphql_authentication_answers_503_unavailable(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    database_proxy.cut()

    result = await gql(client, "{ organization { name } }", key=tenant.admin_key)

    assert_unavailable_headers(result.response)
    assert result.data is None
    assert [e["extensions"]["code"] for e in result.errors] == ["UNAVAILABLE"]


async def test_graphql_resolvers_meeting_the_outage_answer_503_unavailable_not_internal(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    # The key is cached, so authentication succeeds; the query itself needs the database.
    await client.post("/v1/keys/verify", json={"key": tenant.admin_key})
    database_proxy.cut()

    result = await gql(client, "{ apiKeys { totalCount } }", key=tenant.admin_key)

    assert_unavailable_headers(result.response)
    assert [e["extensions"]["code"] for e in result.errors] == ["UNAVAILABLE"]
    assert result.errors[0]["message"] == "The database is unavailable; retry in a few seconds."


async def test_a_mutation_meeting_the_outage_answers_unavailable_and_changes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, database_proxy: TcpProxy
) -> None:
    await client.post("/v1/keys/verify", json={"key": tenant.admin_key})
    database_proxy.cut()
    created = await gql(
        client,
        'mutation { createApiKey(input: {name: "ci", scopes: ["read:billing"]}) { secret } }',
        key=tenant.admin_key,
    )
    database_proxy.heal()

    listed = await gql(client, "{ apiKeys { totalCount } }", key=tenant.admin_key)

    assert_unavailable_headers(created.response)
    assert [e["extensions"]["code"] for e in created.errors] == ["UNAVAILABLE"]
    assert listed.data == {"apiKeys": {"totalCount": 1}}


async def test_a_cached_key_keeps_working_until_its_entry_expires(
    settings: Settings, tenant: Tenant, runtime: Runtime, database_proxy: TcpProxy
) -> None:
    reader = await make_key(runtime, tenant, "reader")
    short = settings.model_copy(update={"cache_ttl_without_broadcast_seconds": SHORT_TTL_SECONDS})
    async with serving(short) as (_, client):
        await client.post("/v1/keys/verify", json={"key": reader.secret})
        database_proxy.cut()

        during = await client.post("/v1/keys/verify", json={"key": reader.secret})
        await asyncio.sleep(SHORT_TTL_SECONDS + 0.2)
        expired = await client.post("/v1/keys/verify", json={"key": reader.secret})

    assert during.status_code == 200
    assert during.json()["valid"] is True
    assert expired.status_code == 503
    assert expired.json()["code"] == "UNAVAILABLE"
