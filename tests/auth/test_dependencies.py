"""``require_key``: the same verification as the data plane, as a FastAPI dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlmodel import col, select

from app.auth.secret import generate_secret
from app.dependencies import require_key
from app.keys.cache import KeyRecord
from app.models.usage import UsageBucket
from app.runtime import Runtime
from tests.support import Tenant, make_key

ReadChargePoints = Annotated[KeyRecord, Depends(require_key("read:charge_points"))]


@pytest.fixture
def received() -> list[KeyRecord]:
    """What the handler was given, request by request."""
    return []


@pytest.fixture
async def service_client(
    runtime: Runtime, received: list[KeyRecord]
) -> AsyncIterator[httpx.AsyncClient]:
    service = FastAPI()
    service.state.runtime = runtime

    @service.get("/charge-points")
    async def charge_points(key: ReadChargePoints) -> dict[str, str]:
        received.append(key)
        return {"organization": key.organization_id}

    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        yield client


async def test_key_holding_the_scope_reaches_the_handler_with_its_record(
    service_client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    received: list[KeyRecord],
) -> None:
    key = await make_key(runtime, tenant, "service", ["read:charge_points"])

    response = await service_client.get("/charge-points", headers={"X-API-Key": key.secret})

    assert response.status_code == 200
    assert response.json() == {"organization": tenant.organization_id}
    [record] = received
    assert isinstance(record, KeyRecord)
    assert record.id == key.id
    assert record.scopes == frozenset({"read:charge_points"})


async def test_key_in_the_query_string_is_accepted(
    service_client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "service", ["read:charge_points"])

    response = await service_client.get("/charge-points", params={"key": key.secret})

    assert response.status_code == 200


async def test_request_without_a_key_is_401_missing(
    service_client: httpx.AsyncClient, received: list[KeyRecord]
) -> None:
    response = await service_client.get("/charge-points")

    assert response.status_code == 401
    detail = response.json()["detail"]
    assert detail["code"] == "MISSING"
    assert detail["message"]
    assert detail["hint"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert received == []


async def test_different_keys_in_repeated_x_api_key_headers_are_401_conflicting(
    service_client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    received: list[KeyRecord],
) -> None:
    first = await make_key(runtime, tenant, "first", ["read:charge_points"])
    second = await make_key(runtime, tenant, "second", ["read:charge_points"])

    response = await service_client.get(
        "/charge-points", headers=[("X-API-Key", first.secret), ("X-API-Key", second.secret)]
    )

    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "CONFLICTING"
    assert received == []


async def test_unknown_key_is_401_unknown(
    service_client: httpx.AsyncClient, received: list[KeyRecord]
) -> None:
    response = await service_client.get(
        "/charge-points", headers={"Authorization": f"Bearer {generate_secret('kh')}"}
    )

    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "UNKNOWN"
    assert received == []


async def test_key_lacking_the_scope_is_403_insufficient_scope(
    service_client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    received: list[KeyRecord],
) -> None:
    key = await make_key(runtime, tenant, "billing only", ["read:billing"])

    response = await service_client.get("/charge-points", headers={"X-API-Key": key.secret})

    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail["code"] == "INSUFFICIENT_SCOPE"
    assert "'read:charge_points'" in detail["message"]
    assert "WWW-Authenticate" not in response.headers
    assert received == []


async def test_allowed_request_is_counted_as_a_use_with_method_and_path(
    service_client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "service", ["read:charge_points"])

    await service_client.get("/charge-points", headers={"X-API-Key": key.secret})
    await runtime.recorder.flush()

    async with runtime.sessionmaker() as session:
        rows = (
            await session.exec(
                select(UsageBucket.operation, UsageBucket.outcome).where(
                    col(UsageBucket.api_key_id) == key.id
                )
            )
        ).all()
    assert set(rows) == {("GET /charge-points", "VALID")}
