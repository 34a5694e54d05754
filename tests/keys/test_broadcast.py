"""The revocation broadcast across instances when Redis goes away and comes back.

Two instances, A and B, share one database and one Redis. Each test puts a TCP proxy between
one of them and Redis and cuts it, so that only that instance loses Redis (a partition, as a
network fault makes it); the shared server itself is never touched. B's cache keeps entries
far longer than a test runs while its broadcast is live, so B refusing a key revoked on A can
only come from the broadcast, or from the short TTL once B knows it cannot hear broadcasts.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.config import Settings
from app.keys.broadcast import RETRY_MAX_SECONDS
from app.runtime import Runtime
from tests.support import eventually, gql, make_tenant, serving
from tests.tcp_proxy import TcpProxy, tcp_proxy

pytestmark = pytest.mark.redis

LONG_TTL_SECONDS = 3600.0
SHORT_TTL_SECONDS = 0.5
# How long a subscription takes to notice, or to come back: its reconnect delay and a margin.
SUBSCRIPTION_SECONDS = 5.0

CREATE_KEY = """
mutation { createApiKey(input: {name: "integration", scopes: ["read:billing"]}) {
  apiKey { id } secret userErrors { code } } }
"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }"


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    with tcp_proxy(redis_url) as proxy:
        yield proxy


def instance_settings(settings: Settings, redis_url: str) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": redis_url,
            "cache_ttl_seconds": LONG_TTL_SECONDS,
            "cache_ttl_without_broadcast_seconds": SHORT_TTL_SECONDS,
        }
    )


async def live(runtime: Runtime) -> bool:
    return runtime.broadcast.live


async def deaf(runtime: Runtime) -> bool:
    return not runtime.broadcast.live


async def code_of(client: httpx.AsyncClient, key: str) -> str:
    response = await client.post("/v1/keys/verify", json={"key": key})
    code: str = response.json()["code"]
    return code


async def issue_key(runtime: Runtime, client: httpx.AsyncClient) -> tuple[str, str, str]:
    """An admin key and a key it created: (admin secret, key id, key secret)."""
    tenant = await make_tenant(runtime, "Acme")
    created = (await gql(client, CREATE_KEY, key=tenant.admin_key)).data["createApiKey"]
    return tenant.admin_key, created["apiKey"]["id"], created["secret"]


async def test_a_revocation_made_while_redis_was_cut_reaches_the_other_instance_once_healed(
    settings: Settings, redis_url: str, redis_proxy: TcpProxy
) -> None:
    async with (
        serving(instance_settings(settings, redis_proxy.url(redis_url))) as (a, client_a),
        serving(instance_settings(settings, redis_url)) as (b, client_b),
    ):
        assert await eventually(lambda: live(a), within=SUBSCRIPTION_SECONDS)
        assert await eventually(lambda: live(b), within=SUBSCRIPTION_SECONDS)
        admin, key_id, secret = await issue_key(a, client_a)
        assert await code_of(client_b, secret) == "VALID"  # now in B's cache

        redis_proxy.cut()
        revoked = await gql(client_a, REVOKE_KEY, {"id": key_id}, key=admin)
        not_heard_yet = await code_of(client_b, secret)
        redis_proxy.heal()

        async def refused_on_b() -> bool:
            return await code_of(client_b, secret) == "REVOKED"

        heard = await eventually(refused_on_b, within=RETRY_MAX_SECONDS + SUBSCRIPTION_SECONDS)

    assert revoked.data == {"revokeApiKey": {"userErrors": []}}
    assert not_heard_yet == "VALID", "B is still subscribed and only learns from the broadcast"
    assert heard, "the undelivered broadcast was sent once Redis answered A again"
    assert a.broadcast.undelivered == 0


async def test_an_instance_that_cannot_hear_broadcasts_keeps_entries_only_for_the_short_ttl(
    settings: Settings, redis_url: str, redis_proxy: TcpProxy
) -> None:
    async with (
        serving(instance_settings(settings, redis_url)) as (a, client_a),
        serving(instance_settings(settings, redis_proxy.url(redis_url))) as (b, client_b),
    ):
        assert await eventually(lambda: live(b), within=SUBSCRIPTION_SECONDS)
        admin, key_id, secret = await issue_key(a, client_a)
        assert await code_of(client_b, secret) == "VALID"  # now in B's cache

        redis_proxy.cut()
        assert await eventually(lambda: deaf(b), within=SUBSCRIPTION_SECONDS)
        await gql(client_a, REVOKE_KEY, {"id": key_id}, key=admin)

        async def refused_on_b() -> bool:
            return await code_of(client_b, secret) == "REVOKED"

        heard = await eventually(refused_on_b, within=SHORT_TTL_SECONDS + 1.0)
        ready = await client_b.get("/readyz")

    assert heard, "B's entry expired after the short TTL, though B never heard the broadcast"
    assert ready.json()["checks"]["revocationBroadcast"].startswith("down")
