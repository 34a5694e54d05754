"""KEYHOUSE_SERVICE_TOKEN: with it set, the data plane answers only callers that send it."""

from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from tests.support import Tenant

TOKEN = "s3rvice-token"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, usage_flush_interval_seconds=3600, service_token=TOKEN
    )


def assert_token_required(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.json() == {
        "code": "SERVICE_TOKEN_REQUIRED",
        "message": "This endpoint needs the service token.",
        "hint": "Send it in x-keyhouse-service-token (the deployment's KEYHOUSE_SERVICE_TOKEN).",
    }
    assert response.headers["WWW-Authenticate"] == 'KeyhouseServiceToken realm="keyhouse"'


@pytest.mark.parametrize("sent", [None, "wrong-token", ""])
async def test_verify_without_the_right_token_is_refused_and_spends_nothing(
    client: httpx.AsyncClient, tenant: Tenant, sent: str | None
) -> None:
    headers = {} if sent is None else {"X-Keyhouse-Service-Token": sent}

    refused = await client.post("/v1/keys/verify", json={"key": tenant.admin_key}, headers=headers)

    assert_token_required(refused)
    answered = await client.post(
        "/v1/keys/verify",
        json={"key": tenant.admin_key},
        headers={"X-Keyhouse-Service-Token": TOKEN},
    )
    assert answered.json()["valid"] is True
    assert answered.json()["ratelimit"]["remaining"] == 999  # the refusal spent no budget


@pytest.mark.parametrize("sent", [None, "wrong-token"])
async def test_forward_auth_without_the_right_token_is_refused_and_spends_nothing(
    client: httpx.AsyncClient, tenant: Tenant, sent: str | None
) -> None:
    key = {"X-API-Key": tenant.admin_key}
    headers = key if sent is None else {**key, "X-Keyhouse-Service-Token": sent}

    refused = await client.get("/v1/auth", headers=headers)

    assert_token_required(refused)
    answered = await client.get("/v1/auth", headers={**key, "X-Keyhouse-Service-Token": TOKEN})
    assert answered.status_code == 200
    assert answered.headers["X-RateLimit-Remaining"] == "999"
