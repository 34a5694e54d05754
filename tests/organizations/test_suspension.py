"""Suspending an organization: every key of it is refused (ORGANIZATION_SUSPENDED) on verify,
forward auth and GraphQL from the next request, on every instance, counted in usage like any
other outcome, until the operator resumes it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.config import Settings
from app.runtime import Runtime
from tests.support import (
    IssuedKey,
    Tenant,
    eventually,
    gql,
    make_key,
    make_operator_key,
    make_tenant,
    serving,
    snapshot,
)

SUSPEND = """
mutation Suspend($id: ID!, $reason: String!) {
  suspendOrganization(input: {id: $id, reason: $reason}) {
    organization { id status suspendedAt suspensionReason }
    userErrors { code field message }
  }
}
"""
RESUME = """
mutation Resume($id: ID!) {
  resumeOrganization(id: $id) {
    organization { id status suspendedAt }
    userErrors { code field message }
  }
}
"""
OPERATOR_AUDIT = """
{ operatorAuditLog { nodes { action actor { id hint } organization { id } details } } }
"""


@pytest.fixture
async def operator(runtime: Runtime) -> IssuedKey:
    return await make_operator_key(runtime)


async def suspend(
    client: httpx.AsyncClient, operator: IssuedKey, organization_id: str, reason: str = "unpaid"
) -> dict[str, Any]:
    result = await gql(
        client, SUSPEND, {"id": organization_id, "reason": reason}, key=operator.secret
    )
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["suspendOrganization"]
    return payload


async def resume(
    client: httpx.AsyncClient, operator: IssuedKey, organization_id: str
) -> dict[str, Any]:
    result = await gql(client, RESUME, {"id": organization_id}, key=operator.secret)
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["resumeOrganization"]
    return payload


async def verify_code(client: httpx.AsyncClient, key: str) -> str:
    code: str = (await client.post("/v1/keys/verify", json={"key": key})).json()["code"]
    return code


async def test_a_suspended_organizations_keys_are_refused_everywhere_until_resumed(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "integration")
    assert await verify_code(client, key.secret) == "VALID"  # cached

    payload = await suspend(client, operator, tenant.organization_id, "unpaid invoices")
    verified = await client.post("/v1/keys/verify", json={"key": key.secret})
    forwarded = await client.get("/v1/auth", headers={"X-API-Key": key.secret})
    graphql = await gql(client, "{ organization { id } }", key=tenant.admin_key)
    resumed = await resume(client, operator, tenant.organization_id)
    after = await verify_code(client, key.secret)

    assert payload["userErrors"] == []
    assert payload["organization"]["status"] == "SUSPENDED"
    assert payload["organization"]["suspensionReason"] == "unpaid invoices"
    body = verified.json()
    assert (body["valid"], body["code"]) == (False, "ORGANIZATION_SUSPENDED")
    assert body["keyId"] is None
    assert "unpaid" not in str(body), "the operator's reason is not told to key holders"
    assert forwarded.status_code == 403
    assert forwarded.headers["X-Keyhouse-Code"] == "ORGANIZATION_SUSPENDED"
    assert graphql.response.status_code == 403
    assert graphql.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert graphql.errors[0]["extensions"]["reason"] == "ORGANIZATION_SUSPENDED"
    assert resumed["organization"]["status"] == "ACTIVE"
    assert resumed["organization"]["suspendedAt"] is None
    assert after == "VALID"


async def test_suspension_holds_whatever_the_keys_own_standing_and_is_counted_in_usage(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "integration")
    await suspend(client, operator, tenant.organization_id)
    for _ in range(3):
        assert await verify_code(client, key.secret) == "ORGANIZATION_SUSPENDED"
    await runtime.recorder.flush()
    await resume(client, operator, tenant.organization_id)

    usage = await gql(
        client,
        """query($from: DateTime!, $to: DateTime!) {
          usage(from: $from, to: $to, granularity: DAY) {
            totals { requests valid rejected } byOutcome { outcome requests } } }""",
        {"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"},
        key=tenant.admin_key,
    )

    assert usage.errors == [], usage.body
    outcomes = {row["outcome"]: row["requests"] for row in usage.data["usage"]["byOutcome"]}
    assert outcomes["ORGANIZATION_SUSPENDED"] == 3


async def test_other_organizations_keep_working(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant
) -> None:
    other = await make_tenant(runtime, "Globex")
    await suspend(client, operator, tenant.organization_id)

    assert await verify_code(client, other.admin_key) == "VALID"
    assert await verify_code(client, tenant.admin_key) == "ORGANIZATION_SUSPENDED"


async def test_suspension_and_resumption_land_in_both_audit_logs(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    await suspend(client, operator, tenant.organization_id, "unpaid")
    again = await suspend(client, operator, tenant.organization_id, "twice")
    await resume(client, operator, tenant.organization_id)

    own = await gql(
        client,
        "{ auditLog { nodes { action actor { id hint } details } } }",
        key=tenant.admin_key,
    )
    operators = await gql(client, OPERATOR_AUDIT, key=operator.secret)

    assert again["organization"]["suspensionReason"] == "unpaid", "a second suspend is a no-op"
    actor = {"id": operator.id, "hint": operator.hint}
    events = own.data["auditLog"]["nodes"]
    assert [e["action"] for e in events[:2]] == ["ORGANIZATION_RESUMED", "ORGANIZATION_SUSPENDED"]
    assert all(e["actor"] == actor for e in events[:2])
    assert events[1]["details"] == {"reason": "unpaid"}
    logged = operators.data["operatorAuditLog"]["nodes"]
    assert [e["action"] for e in logged[:2]] == ["ORGANIZATION_RESUMED", "ORGANIZATION_SUSPENDED"]
    assert logged[0]["organization"] == {"id": tenant.organization_id}


@pytest.mark.parametrize(
    ("variables", "field", "code"),
    [
        ({"reason": ""}, "reason", "INVALID_INPUT"),
        ({"reason": "x" * 501}, "reason", "INVALID_INPUT"),
        ({"id": "org_doesnotexist0000000000"}, "id", "NOT_FOUND"),
        ({"id": "not an id"}, "id", "NOT_FOUND"),
    ],
)
async def test_a_bad_suspension_is_a_user_error_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    operator: IssuedKey,
    tenant: Tenant,
    variables: dict[str, str],
    field: str,
    code: str,
) -> None:
    before = await snapshot(runtime)
    sent = {"id": tenant.organization_id, "reason": "unpaid", **variables}

    result = await gql(client, SUSPEND, sent, key=operator.secret)

    payload = result.data["suspendOrganization"]
    assert payload["organization"] is None
    [error] = payload["userErrors"]
    assert (error["code"], error["field"]) == (code, field)
    assert await snapshot(runtime) == before


async def test_resuming_an_unknown_organization_is_not_found(
    client: httpx.AsyncClient, operator: IssuedKey
) -> None:
    payload = await resume(client, operator, "org_doesnotexist0000000000")

    assert payload["userErrors"][0]["code"] == "NOT_FOUND"


# --- every instance ---------------------------------------------------------------------------


@pytest.mark.redis
async def test_a_suspension_made_on_one_instance_holds_on_the_other_from_the_next_request(
    settings: Settings, redis_url: str
) -> None:
    # Entries live far longer than the test: B learns of the suspension from the broadcast only.
    shared = settings.model_copy(
        update={
            "redis_url": redis_url,
            "cache_ttl_seconds": 3600.0,
            "cache_ttl_without_broadcast_seconds": 3600.0,
        }
    )
    async with serving(shared) as (a, client_a), serving(shared) as (b, client_b):

        async def live() -> bool:
            return a.broadcast.live and b.broadcast.live

        assert await eventually(live, within=5.0)
        tenant = await make_tenant(a, "Acme")
        operator = await make_operator_key(a)
        key = await make_key(a, tenant, "integration")
        assert await verify_code(client_b, key.secret) == "VALID"  # now in B's cache

        await suspend(client_a, operator, tenant.organization_id)

        async def refused_on_b() -> bool:
            return await verify_code(client_b, key.secret) == "ORGANIZATION_SUSPENDED"

        # Delivery through Redis takes a moment; no expiry can explain the refusal.
        assert await eventually(refused_on_b, within=2.0)
        await resume(client_a, operator, tenant.organization_id)

        async def valid_on_b() -> bool:
            return await verify_code(client_b, key.secret) == "VALID"

        assert await eventually(valid_on_b, within=2.0)


async def test_suspension_is_told_before_the_keys_own_standing(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant
) -> None:
    revoked = await make_key(runtime, tenant, "revoked")
    await gql(
        client,
        "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }",
        {"id": revoked.id},
        key=tenant.admin_key,
    )
    await suspend(client, operator, tenant.organization_id)

    scoped = await client.post(
        "/v1/keys/verify", json={"key": tenant.admin_key, "scopes": ["no:such_scope"]}
    )

    # Known key, then the organization, then the key itself (revoked) and its scopes.
    assert await verify_code(client, revoked.secret) == "ORGANIZATION_SUSPENDED"
    assert scoped.json()["code"] == "ORGANIZATION_SUSPENDED"
    assert await verify_code(client, "kh_" + "A" * 38) == "MALFORMED"
