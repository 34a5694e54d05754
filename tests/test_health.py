"""``/healthz`` and ``/readyz``: what an orchestrator and an operator see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.support import eventually, make_tenant, serving
from tests.tcp_proxy import tcp_proxy

# Nothing listens on port 1: connections are refused at once.
REDIS_DOWN_URL = "redis://127.0.0.1:1/0"


async def test_healthz_and_readyz_answer_on_the_embedded_defaults(
    client: httpx.AsyncClient,
) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "rateLimits": "memory"},
        "failed": [],
    }


@pytest.fixture
async def redis_down_client(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """keyhouse configured with a Redis that does not answer, and a key of its organization."""
    runtime = Runtime.create(settings.model_copy(update={"redis_url": REDIS_DOWN_URL}))
    tenant = await make_tenant(runtime, "Acme")
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as client:
            yield client, tenant.admin_key


async def test_with_redis_down_verification_keeps_working_and_readyz_says_so(
    redis_down_client: tuple[httpx.AsyncClient, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, key = redis_down_client

    verified = await client.post("/v1/keys/verify", json={"key": key})
    ready = await client.get("/readyz")

    assert verified.json()["valid"] is True
    assert ready.status_code == 200, "local limits and the short TTL keep the service usable"
    assert ready.json() == {
        "status": "degraded",
        "checks": {
            "database": "ok",
            "redis": "unavailable",
            "rateLimits": "memory (redis unavailable)",
            "revocationBroadcast": "down: cache entries expire after 5s",
        },
        "failed": ["redis"],
    }
    assert "counting in process memory" in caplog.text


# --- probed when asked: dependencies cut and healed through a TCP proxy --------------------


@pytest.mark.postgres
async def test_readyz_answers_503_naming_the_database_while_it_is_cut(
    postgres_migrated: str,
) -> None:
    with tcp_proxy(postgres_migrated) as proxy:
        settings = Settings(database_url=proxy.url(postgres_migrated))
        async with serving(settings) as (_, client):
            assert (await client.get("/readyz")).status_code == 200
            proxy.cut()
            during = await client.get("/readyz")
            proxy.heal()
            after = await client.get("/readyz")

    assert during.status_code == 503
    assert during.json()["status"] == "unavailable"
    assert during.json()["failed"] == ["database"]
    assert during.json()["checks"]["database"] == "unavailable"
    assert after.status_code == 200
    assert after.json()["failed"] == []


@pytest.mark.redis
async def test_readyz_asks_redis_now_not_what_the_last_request_saw(
    settings: Settings, redis_url: str
) -> None:
    with tcp_proxy(redis_url) as proxy:
        configured = settings.model_copy(update={"redis_url": proxy.url(redis_url)})
        async with serving(configured) as (runtime, client):
            assert await eventually(lambda: _live(runtime), within=5.0)
            before = await client.get("/readyz")
            proxy.cut()
            # No request has used Redis since the cut: only a probe can tell.
            during = await client.get("/readyz")
            proxy.heal()
            after = await client.get("/readyz")

    assert before.json()["checks"]["rateLimits"] == "redis"
    assert during.status_code == 200, "degraded, still answering correctly"
    assert during.json()["status"] == "degraded"
    assert during.json()["failed"] == ["redis"]
    assert during.json()["checks"]["redis"] == "unavailable"
    assert during.json()["checks"]["rateLimits"] == "memory (redis unavailable)"
    assert after.json()["checks"]["redis"] == "ok"
    assert after.json()["checks"]["rateLimits"] == "redis", "counting in Redis again at once"


async def _live(runtime: Runtime) -> bool:
    return runtime.broadcast.live
