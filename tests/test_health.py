"""``/healthz`` and ``/readyz``: what an orchestrator and an operator see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.runtime import Runtime
from tests.support import make_tenant

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
    assert ready.json()["checks"] == {
        "database": "ok",
        "rateLimits": "memory (redis unavailable)",
        "revocationBroadcast": "down: cache entries expire after 5s",
    }
    assert "counting in process memory" in caplog.text
