"""The operator API for organizations: the list of every organization, createOrganization
(idempotent on the platform's externalId) and who may use them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, gql, make_operator_key, snapshot

CREATE = """
mutation Create($input: CreateOrganizationInput!) {
  createOrganization(input: $input) {
    organization { id name externalId status }
    adminKey { id name scopes }
    secret
    userErrors { code field message }
  }
}
"""

ORGANIZATIONS = """
query Organizations($first: Int, $after: String, $filter: OrganizationFilter) {
  organizations(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { id name externalId status }
  }
}
"""


@pytest.fixture
async def operator(runtime: Runtime) -> IssuedKey:
    return await make_operator_key(runtime)


async def create(
    client: httpx.AsyncClient, key: str, name: str, external_id: str
) -> dict[str, Any]:
    result = await gql(
        client, CREATE, {"input": {"name": name, "externalId": external_id}}, key=key
    )
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["createOrganization"]
    return payload


async def test_an_operator_creates_an_organization_whose_admin_key_works(
    client: httpx.AsyncClient, operator: IssuedKey
) -> None:
    payload = await create(client, operator.secret, "Initech", "cus_123")

    assert payload["userErrors"] == []
    organization = payload["organization"]
    assert organization == {
        "id": organization["id"],
        "name": "Initech",
        "externalId": "cus_123",
        "status": "ACTIVE",
    }
    secret = payload["secret"]
    assert isinstance(secret, str)
    assert secret.startswith("kh_")
    own = await gql(client, "{ organization { id name externalId } }", key=secret)
    assert own.data == {
        "organization": {"id": organization["id"], "name": "Initech", "externalId": "cus_123"}
    }


async def test_a_retry_with_the_same_external_id_answers_the_same_organization_without_a_secret(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey
) -> None:
    first = await create(client, operator.secret, "Initech", "cus_123")
    before = await snapshot(runtime)

    again = await create(client, operator.secret, "Initech (retry)", "cus_123")

    assert again["organization"] == first["organization"]
    assert again["secret"] is None
    assert again["adminKey"] is None
    [error] = again["userErrors"]
    assert error["code"] == "ALREADY_EXISTS"
    assert error["field"] == "externalId"
    assert "shown once" in error["message"]
    assert await snapshot(runtime) == before


async def test_concurrent_creates_with_one_external_id_make_one_organization(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey
) -> None:
    answers = await asyncio.gather(
        *(create(client, operator.secret, "Initech", "cus_race") for _ in range(4))
    )

    assert len({str(answer["organization"]) for answer in answers}) == 1
    assert sum(answer["secret"] is not None for answer in answers) == 1
    listed = await gql(
        client, ORGANIZATIONS, {"filter": {"externalId": "cus_race"}}, key=operator.secret
    )
    assert listed.data["organizations"]["totalCount"] == 1


@pytest.mark.parametrize(
    ("name", "external_id", "field"),
    [
        ("", "cus_1", "name"),
        ("Initech", "", "externalId"),
        ("Initech", "cus 1", "externalId"),
        ("Initech", "x" * 129, "externalId"),
        ("x" * 129, "cus_1", "name"),
    ],
)
async def test_a_bad_input_is_a_user_error_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    operator: IssuedKey,
    name: str,
    external_id: str,
    field: str,
) -> None:
    before = await snapshot(runtime)

    payload = await create(client, operator.secret, name, external_id)

    assert payload["organization"] is None
    assert payload["secret"] is None
    [error] = payload["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", field)
    assert await snapshot(runtime) == before


async def test_organizations_are_listed_newest_first_in_pages_with_filters(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    for number in range(3):
        await create(client, operator.secret, f"Customer {number}", f"cus_{number}")

    first = await gql(client, ORGANIZATIONS, {"first": 2}, key=operator.secret)
    page = first.data["organizations"]
    rest = await gql(
        client,
        ORGANIZATIONS,
        {"first": 2, "after": page["pageInfo"]["endCursor"]},
        key=operator.secret,
    )
    by_id = await gql(
        client, ORGANIZATIONS, {"filter": {"externalId": "cus_1"}}, key=operator.secret
    )
    suspended = await gql(
        client, ORGANIZATIONS, {"filter": {"status": "SUSPENDED"}}, key=operator.secret
    )

    names = [node["name"] for node in page["nodes"] + rest.data["organizations"]["nodes"]]
    assert names == ["Customer 2", "Customer 1", "Customer 0", "Acme"]
    assert page["totalCount"] == 4
    assert page["pageInfo"]["hasNextPage"] is True
    assert rest.data["organizations"]["pageInfo"]["hasNextPage"] is False
    assert [node["name"] for node in by_id.data["organizations"]["nodes"]] == ["Customer 1"]
    assert suspended.data["organizations"] == {
        "totalCount": 0,
        "pageInfo": {"hasNextPage": False, "endCursor": None},
        "nodes": [],
    }


# --- can a weaker caller get more? ---------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        "{ organizations { nodes { id } } }",
        'mutation { createOrganization(input: {name: "X", externalId: "x"}) { secret } }',
        'mutation { suspendOrganization(input: {id: "org_x", reason: "r"})'
        " { userErrors { code } } }",
        'mutation { resumeOrganization(id: "org_x") { userErrors { code } } }',
    ],
)
async def test_an_organizations_admin_key_is_forbidden_every_operator_field(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, document: str
) -> None:
    before = await snapshot(runtime)

    result = await gql(client, document, key=tenant.admin_key)

    [error] = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "operator"}
    assert "operator key" in error["message"]
    assert result.data is None
    after = await snapshot(runtime)
    # The request itself is a use of the admin key; nothing else changed.
    assert {k: v for k, v in after.items() if "usage" not in k} == {
        k: v for k, v in before.items() if "usage" not in k
    }


@pytest.mark.parametrize(
    "document",
    [
        "{ organization { id } }",
        "{ apiKeys { nodes { id } } }",
        "{ scopes { name } }",
        "{ webhookEventTypes { name } }",
        "{ webhookEndpoints { id } }",
        "{ auditLog { nodes { id } } }",
        '{ usage(from: "2026-11-30T00:00:00Z", to: "2026-12-01T00:00:00Z", granularity: HOUR)'
        " { totals { requests } } }",
        'mutation { createApiKey(input: {name: "x", scopes: ["read:billing"]}) { secret } }',
        'mutation { revokeApiKey(id: "key_x") { userErrors { code } } }',
        "mutation { updateKeyPolicy(input: {requireExpiry: true}) { userErrors { code } } }",
    ],
)
async def test_an_operator_key_is_forbidden_every_organization_field(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey, tenant: Tenant, document: str
) -> None:
    before = await snapshot(runtime)

    result = await gql(client, document, key=operator.secret)

    assert result.error_codes == ["FORBIDDEN"], result.body
    assert "operator key" in result.errors[0]["message"]
    assert await snapshot(runtime) == before


async def test_an_unknown_or_revoked_operator_key_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey
) -> None:
    from app.kit.db import session_scope
    from app.operators.keys import revoke_operator_key

    unknown = "kho_" + operator.secret[4:-6] + "AAAAAA"
    malformed = await gql(client, "{ organizations { nodes { id } } }", key=unknown)
    async with session_scope(runtime.sessionmaker) as session:
        await revoke_operator_key(session, operator.id)
    revoked = await gql(client, "{ organizations { nodes { id } } }", key=operator.secret)

    assert malformed.response.status_code == 401
    assert malformed.errors[0]["extensions"]["reason"] == "MALFORMED"
    assert revoked.response.status_code == 401
    assert revoked.errors[0]["extensions"]["reason"] == "REVOKED"
    assert "operator-keys create" in revoked.errors[0]["extensions"]["hint"]


async def test_an_operator_key_is_not_a_key_of_the_data_plane(
    client: httpx.AsyncClient, operator: IssuedKey
) -> None:
    verified = await client.post("/v1/keys/verify", json={"key": operator.secret})
    forwarded = await client.get("/v1/auth", headers={"X-API-Key": operator.secret})

    assert verified.json()["valid"] is False
    assert verified.json()["code"] == "MALFORMED"
    assert forwarded.status_code == 401


async def test_the_data_plane_says_an_operator_key_is_for_graphql_only(
    client: httpx.AsyncClient, operator: IssuedKey
) -> None:
    verified = (await client.post("/v1/keys/verify", json={"key": operator.secret})).json()

    assert verified["code"] == "MALFORMED"
    assert "/graphql only" in verified["hint"]


async def test_an_operator_key_is_presented_like_any_key(
    client: httpx.AsyncClient, operator: IssuedKey, tenant: Tenant
) -> None:
    query = {"query": "{ organizations { totalCount } }"}

    bearer = await client.post(
        "/graphql", json=query, headers={"Authorization": f"Bearer {operator.secret}"}
    )
    both = await client.post(
        "/graphql",
        json=query,
        headers={"X-API-Key": tenant.admin_key, "Authorization": f"Bearer {operator.secret}"},
    )

    assert bearer.json()["data"] == {"organizations": {"totalCount": 1}}
    assert both.status_code == 401
    assert both.json()["errors"][0]["extensions"]["reason"] == "CONFLICTING"
