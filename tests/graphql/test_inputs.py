"""Every string a GraphQL request sends crosses the boundary before anything runs, and a use
is counted under an operation's name only once that operation ran."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.runtime import Runtime
from tests.support import Tenant, gql, snapshot

CREATE = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id } secret userErrors { code field message } }
}
"""

HOSTILE = [
    pytest.param("deploy\x00bot", id="nul"),
    pytest.param("deploy\udc00bot", id="lone-surrogate"),
    pytest.param("deploy\x1b[2Jbot", id="escape"),
    pytest.param("deploy\u202ebot", id="bidi-override"),
    pytest.param("x" * 1_000_000, id="a-megabyte"),
]


async def _labels(runtime: Runtime, organization_id: str) -> list[str]:
    await runtime.recorder.flush()
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT DISTINCT operation FROM usage_buckets WHERE organization_id = :org"
                " ORDER BY operation"
            ),
            {"org": organization_id},
        )
        return [row[0] for row in rows]


@pytest.mark.parametrize("value", HOSTILE)
async def test_a_hostile_string_in_a_variable_is_bad_user_input_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, value: str
) -> None:
    before = await snapshot(runtime)
    variables = {"input": {"name": value, "scopes": ["read:charge_points"]}}

    result = await gql(client, CREATE, variables, key=tenant.admin_key)

    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert result.errors[0]["extensions"]["argument"] == "$input.name"
    assert len(result.response.content) < 1000  # the error never echoes the value
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(
    ("literal", "problem"),
    [
        (r"deploy\u0000bot", "A string in the query holds a NUL character at position 6."),
        (r"deploy\u0007bot", "A string in the query holds a control character at position 6."),
        # graphql-core's parser refuses this one itself.
        (r"deploy\udc00bot", "Syntax Error: Invalid Unicode escape sequence: '\\udc00'."),
    ],
)
async def test_a_hostile_string_literal_in_the_document_is_refused_with_its_location(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, literal: str, problem: str
) -> None:
    before = await snapshot(runtime)
    query = (
        f'mutation {{ createApiKey(input: {{name: "{literal}", scopes: ["read:charge_points"]}})'
        " { secret } }"
    )

    result = await gql(client, query, key=tenant.admin_key)

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert result.errors[0]["message"] == problem
    assert result.errors[0]["locations"][0]["line"] == 1
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (
            "query($op: String) { usage(from: $f, to: $t, granularity: HOUR, operation: $op)"
            " { totals { requests } } }",
            {"op": "GET /x\x00y"},
        ),
        (
            "query($id: ID) { usage(from: $f, to: $t, granularity: HOUR, apiKeyId: $id)"
            " { totals { requests } } }",
            {"id": "key_\x00"},
        ),
        (
            "query($id: ID) { auditLog(filter: {apiKeyId: $id}) { totalCount } }",
            {"id": "key_\x00"},
        ),
        ("query($s: String) { apiKeys(filter: {scope: $s}) { totalCount } }", {"s": "read\x00"}),
    ],
    ids=["usage-operation", "usage-api-key-id", "audit-api-key-id", "keys-scope"],
)
async def test_a_nul_in_a_filter_is_bad_user_input_never_internal(
    client: httpx.AsyncClient, tenant: Tenant, query: str, variables: dict[str, Any]
) -> None:
    if "usage" in query:
        query = query.replace("query(", "query($f: DateTime!, $t: DateTime!, ")
        variables = {**variables, "f": "2026-01-01T00:00:00Z", "t": "2026-01-01T04:00:00Z"}

    result = await gql(client, query, variables, key=tenant.admin_key)

    assert result.error_codes == ["BAD_USER_INPUT"], result.errors


async def test_a_use_is_labelled_with_the_operation_that_ran(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    named = await gql(
        client,
        "query A { scopes { name } } query B { scopes { name } }",
        key=tenant.admin_key,
        operation_name="B",
    )
    anonymous = await gql(client, "{ scopes { name } }", key=tenant.admin_key)
    single = await gql(client, "query Only { scopes { name } }", key=tenant.admin_key)

    assert named.errors == anonymous.errors == single.errors == []
    assert await _labels(runtime, tenant.organization_id) == [
        "graphql:B",
        "graphql:Only",
        "graphql:anonymous",
    ]


@pytest.mark.parametrize(
    ("query", "operation_name"),
    [
        pytest.param("query Q { scopes { name } }", "Q\x00x", id="nul-operation-name"),
        pytest.param("query Q { scopes { name } }", "Q\udc00", id="surrogate-operation-name"),
        pytest.param("query Q { scopes { nme } }", None, id="invalid-document"),
        pytest.param("query Q { scopes { name } ", None, id="unparsable-document"),
        pytest.param('query Q { apiKey(id: "\\u0000") { id } }', None, id="refused-literal"),
    ],
)
async def test_a_request_that_never_ran_counts_under_one_fixed_label(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    query: str,
    operation_name: str | None,
) -> None:
    payload: dict[str, Any] = {"query": query}
    if operation_name is not None:
        payload["operationName"] = operation_name

    response = await client.post(
        "/graphql",
        content=json.dumps(payload),
        headers={"X-API-Key": tenant.admin_key, "Content-Type": "application/json"},
    )

    assert response.status_code in (200, 400)
    assert response.json()["errors"]
    assert await _labels(runtime, tenant.organization_id) == ["graphql"]


async def test_a_hostile_operation_name_never_stops_metering_for_anyone(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    for name in ("Q\x00x", "Q\udc00"):
        await client.post(
            "/graphql",
            content=json.dumps({"query": "query Q { scopes { name } }", "operationName": name}),
            headers={"X-API-Key": tenant.admin_key, "Content-Type": "application/json"},
        )
    for _ in range(20):
        assert (
            await gql(client, "query Q { scopes { name } }", key=other_tenant.admin_key)
        ).errors == []

    await runtime.recorder.flush()

    async with runtime.engine.connect() as connection:
        stored = await connection.execute(
            text(
                "SELECT sum(count) FROM usage_buckets WHERE organization_id = :org"
                " AND granularity = 'MINUTE'"
            ),
            {"org": other_tenant.organization_id},
        )
        assert stored.scalar_one() == 20


async def test_a_refused_key_with_graphql_response_json_gets_no_data_entry(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ scopes { name } }"},
        headers={"Accept": "application/graphql-response+json"},
    )

    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/graphql-response+json")
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHORIZED"
