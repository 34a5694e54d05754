"""Managing webhook endpoints through GraphQL: the secret shown once, every bad input a
userError that changes nothing, reading needs read:api_keys and managing write:api_keys (and
read:api_keys: an endpoint receives every key's public fields), one organization never sees
another's endpoints."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.support import Tenant, gql, make_key, snapshot
from tests.webhooks.support import CREATE_ENDPOINT, create_endpoint

ENDPOINTS = "{ webhookEndpoints { id url events enabled description } }"
UPDATE = """
mutation Update($input: UpdateWebhookEndpointInput!) {
  updateWebhookEndpoint(input: $input) {
    endpoint { id url events enabled description disabledAt }
    userErrors { code field message }
  }
}
"""
DELETE = """
mutation Delete($id: ID!) {
  deleteWebhookEndpoint(id: $id) { endpoint { id } userErrors { code field message } }
}
"""
ROTATE = """
mutation Rotate($id: ID!) {
  rotateWebhookSigningSecret(id: $id) {
    endpoint { id previousSecretExpiresAt }
    signingSecret
    userErrors { code field message }
  }
}
"""
DELIVERIES = """
query Deliveries($id: ID!, $first: Int, $after: String) {
  webhookDeliveries(endpointId: $id, first: $first, after: $after) {
    pageInfo { hasNextPage endCursor }
    nodes { eventId eventType status attempts responseStatus nextAttemptAt }
  }
}
"""
URL = "http://127.0.0.1:9/hooks"


async def create(client: httpx.AsyncClient, key: str, **fields: Any) -> dict[str, Any]:
    payload = {"url": URL, "events": ["key.created"], **fields}
    result = await gql(client, CREATE_ENDPOINT, {"input": payload}, key=key)
    assert result.errors == [], result.body
    created: dict[str, Any] = result.data["createWebhookEndpoint"]
    return created


async def test_create_shows_the_signing_secret_once_and_lists_the_endpoint(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create(client, tenant.admin_key, description="billing sync")

    assert created["userErrors"] == []
    assert created["signingSecret"].startswith("whsec_")
    listed = (await gql(client, ENDPOINTS, key=tenant.admin_key)).data["webhookEndpoints"]
    assert listed == [created["endpoint"]]
    assert created["signingSecret"] not in str(listed)


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"url": "http://hooks.example.com/"}, "url", "https://"),
        ({"url": "https://127.0.0.2/"}, "url", "loopback"),
        ({"url": "https://[::1]/"}, "url", "loopback"),
        ({"url": "https://169.254.169.254/"}, "url", "link-local"),
        ({"url": "not a url"}, "url", "https://"),
        ({"events": []}, "events", "at least one"),
        ({"events": ["key.created", "key.exploded"]}, "events", "key.exploded"),
        ({"description": "x" * 501}, "description", "longer than 500"),
    ],
)
async def test_bad_input_is_a_user_error_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    fields: dict[str, Any],
    field: str,
    says: str,
) -> None:
    before = await snapshot(runtime)
    created = await create(client, tenant.admin_key, **fields)

    [error] = created["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == field
    assert says in error["message"]
    assert created["signingSecret"] is None
    assert await snapshot(runtime) == before


async def test_update_changes_what_was_given_and_can_enable_again(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    endpoint_id = (await create(client, tenant.admin_key))["endpoint"]["id"]
    paused = await gql(
        client,
        UPDATE,
        {"input": {"id": endpoint_id, "enabled": False, "events": ["key.revoked", "key.created"]}},
        key=tenant.admin_key,
    )
    endpoint = paused.data["updateWebhookEndpoint"]["endpoint"]
    assert endpoint["enabled"] is False
    assert endpoint["events"] == ["key.created", "key.revoked"]
    assert endpoint["url"] == URL

    resumed = await gql(
        client, UPDATE, {"input": {"id": endpoint_id, "enabled": True}}, key=tenant.admin_key
    )
    assert resumed.data["updateWebhookEndpoint"]["endpoint"]["enabled"] is True


async def test_a_bad_update_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    endpoint_id = (await create(client, tenant.admin_key))["endpoint"]["id"]
    before = await snapshot(runtime)
    result = await gql(
        client,
        UPDATE,
        {"input": {"id": endpoint_id, "url": "https://10.0.0.1/", "description": "new"}},
        key=tenant.admin_key,
    )
    assert [e["field"] for e in result.data["updateWebhookEndpoint"]["userErrors"]] == ["url"]
    assert await snapshot(runtime) == before


async def test_rotate_gives_a_new_secret_and_keeps_the_old_one_a_day(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create(client, tenant.admin_key)
    rotated = await gql(client, ROTATE, {"id": created["endpoint"]["id"]}, key=tenant.admin_key)
    payload = rotated.data["rotateWebhookSigningSecret"]
    assert payload["signingSecret"].startswith("whsec_")
    assert payload["signingSecret"] != created["signingSecret"]
    assert payload["endpoint"]["previousSecretExpiresAt"] is not None


async def test_delete_removes_it(client: httpx.AsyncClient, tenant: Tenant) -> None:
    endpoint_id = (await create(client, tenant.admin_key))["endpoint"]["id"]
    deleted = await gql(client, DELETE, {"id": endpoint_id}, key=tenant.admin_key)
    assert deleted.data["deleteWebhookEndpoint"]["userErrors"] == []
    assert (await gql(client, ENDPOINTS, key=tenant.admin_key)).data["webhookEndpoints"] == []
    again = await gql(client, DELETE, {"id": endpoint_id}, key=tenant.admin_key)
    assert again.data["deleteWebhookEndpoint"]["userErrors"][0]["code"] == "NOT_FOUND"


async def test_another_organizations_endpoint_is_not_found_nor_listed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = (await create(client, other_tenant.admin_key))["endpoint"]["id"]
    before = await snapshot(runtime)

    assert (await gql(client, ENDPOINTS, key=tenant.admin_key)).data["webhookEndpoints"] == []
    for mutation, variables, name in [
        (DELETE, {"id": theirs}, "deleteWebhookEndpoint"),
        (ROTATE, {"id": theirs}, "rotateWebhookSigningSecret"),
        (UPDATE, {"input": {"id": theirs, "enabled": False}}, "updateWebhookEndpoint"),
    ]:
        result = await gql(client, mutation, variables, key=tenant.admin_key)
        assert result.data[name]["userErrors"][0]["code"] == "NOT_FOUND"
    deliveries = await gql(client, DELIVERIES, {"id": theirs}, key=tenant.admin_key)
    assert deliveries.error_codes == ["BAD_USER_INPUT"]
    assert await snapshot(runtime) == before


async def test_reading_needs_read_api_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    analyst = await make_key(runtime, tenant, "analyst", ["read:analytics"])
    result = await gql(client, ENDPOINTS, key=analyst.secret)
    assert result.error_codes == ["FORBIDDEN"]
    assert result.errors[0]["extensions"]["requiredScope"] == "read:api_keys"


async def test_managing_needs_write_api_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:api_keys"])
    before = await snapshot(runtime)
    result = await gql(
        client,
        CREATE_ENDPOINT,
        {"input": {"url": URL, "events": ["key.created"]}},
        key=reader.secret,
    )
    assert result.error_codes == ["FORBIDDEN"]
    assert result.errors[0]["extensions"]["requiredScope"] == "write:api_keys"
    assert await snapshot(runtime) == before


async def test_a_writer_that_cannot_read_keys_cannot_have_them_sent_elsewhere(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    # Every endpoint receives every key's public fields: what read:api_keys would show.
    writer = await make_key(runtime, tenant, "writer", ["write:api_keys"])
    before = await snapshot(runtime)
    created = await create(client, writer.secret)
    assert created["userErrors"][0]["code"] == "FORBIDDEN"
    assert "read:api_keys" in created["userErrors"][0]["message"]
    assert created["signingSecret"] is None
    assert await snapshot(runtime) == before


async def test_deliveries_are_listed_newest_first_with_their_status(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    endpoint = await create_endpoint(client, tenant, URL, events=["key.created"])
    for n in range(3):
        await make_key(runtime, tenant, f"k{n}")
    from app.kit.db import session_scope
    from app.kit.timeutil import utcnow
    from app.webhooks import repository

    async with session_scope(runtime.sessionmaker) as session:
        await repository.fan_out(session, utcnow(), limit=100)

    first = await gql(client, DELIVERIES, {"id": endpoint.id, "first": 2}, key=tenant.admin_key)
    page = first.data["webhookDeliveries"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = await gql(
        client,
        DELIVERIES,
        {"id": endpoint.id, "first": 2, "after": page["pageInfo"]["endCursor"]},
        key=tenant.admin_key,
    )
    nodes = page["nodes"] + rest.data["webhookDeliveries"]["nodes"]
    assert len({node["eventId"] for node in nodes}) == 3
    assert {node["eventType"] for node in nodes} == {"key.created"}
