"""Dashboard sign-in links: a one-time link yields a short-lived credential with the admin's
scopes, for /graphql only, never listed among the organization's keys; the audit logs name the
operator key and the link."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import update

from app.kit.db import session_scope
from app.kit.timeutil import utcnow
from app.models.operators import DashboardCredential, DashboardLink
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, gql, make_operator_key, snapshot

CREATE_LINK = """
mutation Link($input: CreateDashboardLinkInput!) {
  createDashboardLink(input: $input) { url expiresAt userErrors { code field message } }
}
"""
CREATE_KEY = """
mutation { createApiKey(input: {name: "made in the dashboard", scopes: ["read:billing"]}) {
  apiKey { id } secret userErrors { code } } }
"""


@pytest.fixture
async def operator(runtime: Runtime) -> IssuedKey:
    return await make_operator_key(runtime)


async def make_link(
    client: httpx.AsyncClient, operator: IssuedKey, organization_id: str, minutes: int = 15
) -> dict[str, Any]:
    result = await gql(
        client,
        CREATE_LINK,
        {"input": {"organizationId": organization_id, "expiresInMinutes": minutes}},
        key=operator.secret,
    )
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["createDashboardLink"]
    return payload


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


async def spend(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/dashboard/link", json={"token": token})


async def signed_in(client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant) -> str:
    link = await make_link(client, operator, tenant.organization_id)
    answer = await spend(client, token_of(link["url"]))
    assert answer.status_code == 200, answer.text
    credential: str = answer.json()["credential"]
    return credential


async def test_a_link_signs_a_person_in_once_with_the_admins_scopes(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    link = await make_link(client, operator, tenant.organization_id)
    page = await client.get(urlsplit(link["url"]).path)
    first = await spend(client, token_of(link["url"]))
    again = await spend(client, token_of(link["url"]))

    assert link["userErrors"] == []
    assert link["url"].startswith("http://keyhouse.test/dashboard/link/khl_")
    assert page.status_code == 200, "opening the page does not spend the link"
    assert "link.js" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert body["credential"].startswith("khd_")
    assert body["organizationId"] == tenant.organization_id
    assert again.status_code == 410
    assert again.json()["code"] == "USED"
    own = await gql(client, "{ organization { id } scopes { name } }", key=body["credential"])
    assert own.errors == []
    assert own.data["organization"]["id"] == tenant.organization_id


async def test_the_credential_never_appears_among_the_keys_and_the_log_names_link_and_operator(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    credential = await signed_in(client, operator, tenant)

    created = await gql(client, CREATE_KEY, key=credential)
    keys = await gql(client, "{ apiKeys { totalCount nodes { name } } }", key=credential)
    log = await gql(
        client,
        "{ auditLog { nodes { action actor { id hint } details } } }",
        key=tenant.admin_key,
    )

    assert created.data["createApiKey"]["userErrors"] == []
    assert [n["name"] for n in keys.data["apiKeys"]["nodes"]] == ["made in the dashboard", "admin"]
    events = log.data["auditLog"]["nodes"]
    made, signed = events[0], events[1]
    assert made["action"] == "KEY_CREATED"
    link_id = signed["details"]["linkId"]
    assert made["actor"] == {"id": link_id, "hint": f"link by {operator.hint}"}
    assert signed["action"] == "DASHBOARD_SIGNED_IN"
    assert signed["actor"] == {"id": operator.id, "hint": operator.hint}


@pytest.mark.parametrize("place", ["verify", "auth", "usage.csv", "operator"])
async def test_the_credential_works_on_graphql_and_nowhere_else(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant, place: str
) -> None:
    credential = await signed_in(client, operator, tenant)

    if place == "verify":
        answer = await client.post("/v1/keys/verify", json={"key": credential})
        assert answer.json()["code"] == "MALFORMED"
    elif place == "auth":
        answer = await client.get("/v1/auth", headers={"X-API-Key": credential})
        assert answer.status_code == 401
    elif place == "usage.csv":
        answer = await client.get(
            "/v1/operator/usage.csv?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            headers={"X-API-Key": credential},
        )
        assert answer.status_code == 403
    else:
        result = await gql(client, "{ organizations { nodes { id } } }", key=credential)
        assert result.errors[0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "operator"}


async def test_an_expired_link_and_an_expired_credential_are_refused(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant
) -> None:
    stale = await make_link(client, operator, tenant.organization_id)
    credential = await signed_in(client, operator, tenant)
    past = utcnow() - timedelta(seconds=1)
    async with session_scope(runtime.sessionmaker) as session:
        await session.exec(update(DashboardLink).values(expires_at=past))
        await session.exec(update(DashboardCredential).values(expires_at=past))

    link_answer = await spend(client, token_of(stale["url"]))
    graphql = await gql(client, "{ organization { id } }", key=credential)

    assert link_answer.status_code == 410
    assert link_answer.json()["code"] == "EXPIRED"
    assert graphql.response.status_code == 401
    assert graphql.errors[0]["extensions"]["reason"] == "EXPIRED"
    assert "new sign-in link" in graphql.errors[0]["extensions"]["hint"]


async def test_concurrent_uses_of_one_link_sign_in_once(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    link = await make_link(client, operator, tenant.organization_id)

    answers = await asyncio.gather(*(spend(client, token_of(link["url"])) for _ in range(4)))

    assert sorted(answer.status_code for answer in answers) == [200, 410, 410, 410]


async def test_a_suspended_organization_gets_no_link_and_its_sign_ins_are_refused(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    credential = await signed_in(client, operator, tenant)
    suspend = await gql(
        client,
        'mutation($id: ID!) { suspendOrganization(input: {id: $id, reason: "unpaid"}) {'
        " userErrors { code } } }",
        {"id": tenant.organization_id},
        key=operator.secret,
    )
    assert suspend.data["suspendOrganization"]["userErrors"] == []

    refused = await gql(client, "{ organization { id } }", key=credential)
    link = await make_link(client, operator, tenant.organization_id)

    assert refused.response.status_code == 403
    assert refused.errors[0]["extensions"]["reason"] == "ORGANIZATION_SUSPENDED"
    assert link["url"] is None
    assert link["userErrors"][0]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("organization_id", "minutes", "code", "field"),
    [
        (None, 0, "INVALID_INPUT", "expiresInMinutes"),
        (None, 61, "INVALID_INPUT", "expiresInMinutes"),
        ("org_doesnotexist0000000000", 15, "NOT_FOUND", "organizationId"),
    ],
)
async def test_a_bad_link_request_is_a_user_error_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    operator: IssuedKey,
    tenant: Tenant,
    organization_id: str | None,
    minutes: int,
    code: str,
    field: str,
) -> None:
    before = await snapshot(runtime)

    link = await make_link(client, operator, organization_id or tenant.organization_id, minutes)

    assert link["url"] is None
    assert (link["userErrors"][0]["code"], link["userErrors"][0]["field"]) == (code, field)
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"token": 1}', b'{"token": "khl_nope"}', b'{"token": "kh_x", "x": 1}', b"{}"],
)
async def test_a_bad_link_use_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, body: bytes
) -> None:
    before = await snapshot(runtime)

    answer = await client.post("/dashboard/link", content=body)

    assert answer.status_code in (400, 404)
    assert set(answer.json()) == {"code", "message", "hint"}
    assert await snapshot(runtime) == before


async def test_an_organization_key_cannot_make_a_link(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    result = await gql(
        client,
        CREATE_LINK,
        {"input": {"organizationId": tenant.organization_id}},
        key=tenant.admin_key,
    )

    assert result.errors[0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "operator"}
