"""One process can answer both planes, or one of them: ``keyhouse serve --plane data|control``
runs the data plane and the control plane as separate processes on one database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Plane, Settings
from app.main import create_app
from app.runtime import Runtime
from tests.support import Tenant, gql


@pytest.fixture
async def serve_plane(runtime: Runtime) -> AsyncIterator[dict[Plane, httpx.AsyncClient]]:
    """A client per plane, each app a process of its own would run, on the test's database."""
    clients: dict[Plane, httpx.AsyncClient] = {}
    runtimes: list[Runtime] = []
    try:
        for plane in (Plane.DATA, Plane.CONTROL):
            own = Runtime.create(runtime.settings.model_copy(update={"plane": plane}))
            runtimes.append(own)
            app = create_app(runtime=own)
            await own.start()
            transport = httpx.ASGITransport(app=app)
            clients[plane] = httpx.AsyncClient(transport=transport, base_url="http://keyhouse.test")
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()
        for each in runtimes:
            await each.stop()
            await each.engine.dispose()


async def test_the_data_plane_answers_verification_and_not_graphql(
    serve_plane: dict[Plane, httpx.AsyncClient], tenant: Tenant
) -> None:
    data = serve_plane[Plane.DATA]

    verified = await data.post("/v1/keys/verify", json={"key": tenant.admin_key})
    forward = await data.get("/v1/auth", headers={"X-API-Key": tenant.admin_key})
    graphql = await data.post("/graphql", json={"query": "{ organization { id } }"})

    assert verified.json()["valid"] is True
    assert forward.status_code == 200
    assert graphql.status_code == 404
    assert (await data.get("/healthz")).status_code == 200


async def test_the_control_plane_answers_graphql_and_not_verification(
    serve_plane: dict[Plane, httpx.AsyncClient], tenant: Tenant
) -> None:
    control = serve_plane[Plane.CONTROL]

    result = await gql(control, "{ organization { id } }", key=tenant.admin_key)
    verified = await control.post("/v1/keys/verify", json={"key": tenant.admin_key})
    forward = await control.get("/v1/auth", headers={"X-API-Key": tenant.admin_key})

    assert result.data == {"organization": {"id": tenant.organization_id}}
    assert verified.status_code == 404
    assert forward.status_code == 404
    assert (await control.get("/healthz")).status_code == 200


def test_the_plane_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYHOUSE_PLANE", "data")

    assert Settings().plane is Plane.DATA
    assert Settings(plane=Plane.CONTROL).plane is Plane.CONTROL
