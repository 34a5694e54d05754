"""The key controls on the data plane and on GraphQL: IP allowlists (the caller's address taken
only from a trusted proxy's headers), metadata passed on, disabled keys refused, and the verify
body's ``ip`` and ``cost`` checked like its other fields."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.principal import Caller
from app.config import Settings
from app.keys import schemas, update
from app.kit.db import session_scope
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, make_key, snapshot

GATEWAY = "10.0.0.1"
ALLOWED = "203.0.113.7"
OUTSIDE = "198.51.100.1"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        usage_flush_interval_seconds=3600,
        deliver_webhooks=False,
        trusted_proxies="10.0.0.0/8",
    )


@asynccontextmanager
async def connected_from(app: FastAPI, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connection comes from ``peer``."""
    transport = httpx.ASGITransport(app=app, client=(peer, 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keyhouse.test") as client:
        yield client


async def change(runtime: Runtime, tenant: Tenant, key_id: str, **fields: Any) -> None:
    caller = Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)
    async with session_scope(runtime.sessionmaker) as session:
        result = await update.update_key(
            session,
            caller,
            schemas.KeyUpdate(key_id=key_id, **fields),
            catalogue=runtime.catalogue,
            broadcast=runtime.broadcast,
        )
    assert isinstance(result, ApiKey), result


@pytest.fixture
async def fenced(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    """A key usable only from 203.0.113.0/24, with metadata."""
    key = await make_key(runtime, tenant, "fenced")
    await change(
        runtime,
        tenant,
        key.id,
        ip_allowlist=["203.0.113.0/24", "2001:db8::/32"],
        meta={"customerId": "cus_123", "plan": "pro"},
    )
    return key


async def forward_auth(
    app: FastAPI, peer: str, key: str, headers: dict[str, str] | None = None, query: str = ""
) -> httpx.Response:
    async with connected_from(app, peer) as client:
        return await client.get(f"/v1/auth{query}", headers={"X-API-Key": key, **(headers or {})})


# --- POST /v1/keys/verify -------------------------------------------------------------------------


async def test_verify_checks_the_address_the_service_reports(
    client: httpx.AsyncClient, fenced: IssuedKey
) -> None:
    inside = await client.post("/v1/keys/verify", json={"key": fenced.secret, "ip": ALLOWED})
    outside = await client.post("/v1/keys/verify", json={"key": fenced.secret, "ip": OUTSIDE})
    unsaid = await client.post("/v1/keys/verify", json={"key": fenced.secret})

    assert inside.json()["code"] == "VALID"
    assert inside.json()["meta"] == {"customerId": "cus_123", "plan": "pro"}
    assert outside.status_code == 200
    assert (outside.json()["code"], outside.json()["meta"]) == ("IP_NOT_ALLOWED", None)
    assert OUTSIDE in outside.json()["message"]
    assert unsaid.json()["code"] == "IP_NOT_ALLOWED"
    assert '"ip"' in unsaid.json()["hint"]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("ip", "not-an-address", "ip is not an IPv4 or IPv6 address"),
        ("ip", "10.0.0.0/8", "ip is not an IPv4 or IPv6 address"),
        ("ip", "1" * 65, "ip: String should have at most 64 characters"),
        ("ip", 167772161, "ip: Input should be a valid string"),
        ("cost", -1, "cost: Input should be greater than or equal to 0"),
        ("cost", 1001, "cost: Input should be less than or equal to 1000"),
        ("cost", 1.5, "cost: Input should be a valid integer"),
        ("cost", "1", "cost: Input should be a valid integer"),
        ("cost", True, "cost: Input should be a valid integer"),
    ],
)
async def test_a_bad_ip_or_cost_is_a_422_naming_it_and_spends_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    fenced: IssuedKey,
    field: str,
    value: Any,
    says: str,
) -> None:
    await change(runtime, tenant, fenced.id, credits=schemas.Credits(5))
    before = await snapshot(runtime)

    response = await client.post(
        "/v1/keys/verify", json={"key": fenced.secret, "ip": ALLOWED, field: value}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"
    assert says in response.json()["message"], response.json()
    assert await snapshot(runtime) == before


# --- GET /v1/auth ---------------------------------------------------------------------------------


async def test_forward_auth_takes_the_address_from_a_trusted_gateway(
    app: FastAPI, fenced: IssuedKey
) -> None:
    via_real_ip = await forward_auth(app, GATEWAY, fenced.secret, {"X-Real-IP": ALLOWED})
    via_forwarded = await forward_auth(
        app, GATEWAY, fenced.secret, {"X-Forwarded-For": f"192.0.2.1, {ALLOWED}"}
    )
    direct = await forward_auth(app, ALLOWED, fenced.secret)
    ipv6 = await forward_auth(app, "2001:db8::5", fenced.secret)

    assert [r.status_code for r in (via_real_ip, via_forwarded, direct, ipv6)] == [200] * 4


async def test_a_forwarded_for_header_from_an_untrusted_peer_does_not_pass(
    app: FastAPI, fenced: IssuedKey
) -> None:
    spoofed = await forward_auth(
        app, OUTSIDE, fenced.secret, {"X-Forwarded-For": ALLOWED, "X-Real-IP": ALLOWED}
    )

    assert spoofed.status_code == 403
    assert spoofed.headers["X-Keyhouse-Code"] == "IP_NOT_ALLOWED"
    assert OUTSIDE in spoofed.json()["message"]
    assert "203.0.113" not in spoofed.text


async def test_a_forged_left_part_of_forwarded_for_does_not_pass_a_trusted_gateway(
    app: FastAPI, fenced: IssuedKey
) -> None:
    forged = await forward_auth(
        app, GATEWAY, fenced.secret, {"X-Forwarded-For": f"{ALLOWED}, {OUTSIDE}"}
    )

    assert forged.headers["X-Keyhouse-Code"] == "IP_NOT_ALLOWED"


async def test_forward_auth_passes_meta_on_only_when_asked(app: FastAPI, fenced: IssuedKey) -> None:
    asked = await forward_auth(app, ALLOWED, fenced.secret, query="?meta=1")
    unasked = await forward_auth(app, ALLOWED, fenced.secret)

    assert asked.status_code == 200
    meta = json.loads(base64.urlsafe_b64decode(asked.headers["X-Api-Key-Meta"]))
    assert meta == {"customerId": "cus_123", "plan": "pro"}
    assert "X-Api-Key-Meta" not in unasked.headers


async def test_forward_auth_refuses_a_disabled_key_with_a_hint_saying_who_to_ask(
    app: FastAPI, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "paused")
    await change(runtime, tenant, key.id, enabled=False)

    response = await forward_auth(app, ALLOWED, key.secret)

    assert response.status_code == 401
    assert response.headers["X-Keyhouse-Code"] == "DISABLED"
    assert "administrator" in response.json()["hint"]


async def test_forward_auth_spends_a_credit_and_says_what_is_left(
    app: FastAPI, runtime: Runtime, tenant: Tenant, fenced: IssuedKey
) -> None:
    await change(runtime, tenant, fenced.id, credits=schemas.Credits(1))

    first = await forward_auth(app, ALLOWED, fenced.secret)
    second = await forward_auth(app, ALLOWED, fenced.secret)

    assert first.headers["X-Api-Key-Credits-Remaining"] == "0"
    assert (second.status_code, second.headers["X-Keyhouse-Code"]) == (403, "CREDITS_EXHAUSTED")


# --- GraphQL -------------------------------------------------------------------------------------


async def test_graphql_checks_the_calling_keys_allowlist(
    app: FastAPI, runtime: Runtime, tenant: Tenant
) -> None:
    await change(runtime, tenant, tenant.admin_key_id, ip_allowlist=["203.0.113.0/24"])
    query = {"query": "{ organization { name } }"}

    async with connected_from(app, OUTSIDE) as outside:
        refused = await outside.post(
            "/graphql", json=query, headers={"X-API-Key": tenant.admin_key}
        )
    async with connected_from(app, GATEWAY) as gateway:
        spoofed_through_gateway = await gateway.post(
            "/graphql",
            json=query,
            headers={"X-API-Key": tenant.admin_key, "X-Forwarded-For": f"{ALLOWED}, {OUTSIDE}"},
        )
        allowed = await gateway.post(
            "/graphql",
            json=query,
            headers={"X-API-Key": tenant.admin_key, "X-Real-IP": ALLOWED},
        )

    assert refused.status_code == 403
    (error,) = refused.json()["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["extensions"]["reason"] == "IP_NOT_ALLOWED"
    assert spoofed_through_gateway.status_code == 403
    assert allowed.status_code == 200
    assert allowed.json()["data"]["organization"]["name"] == "Acme"
