"""The webhooks page's operations (the files of ``frontend-queries/`` it sends), run as the page
runs them: add an endpoint and keep its secret, watch a delivery arrive signed with it, pause
and enable it, rotate the secret, delete it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from app.kit.timeutil import utcnow
from app.models.events import EventType
from app.runtime import Runtime
from tests.support import Tenant, gql, make_key
from tests.webhooks.receiver import Receiver
from tests.webhooks.support import deliver_all

FRONTEND_QUERIES = Path(__file__).resolve().parents[2] / "frontend-queries"


async def send(
    client: httpx.AsyncClient, file_name: str, key: str, **variables: Any
) -> dict[str, Any]:
    """One of the page's documents, as the page sends it; it must succeed."""
    document = (FRONTEND_QUERIES / file_name).read_text()
    result = await gql(
        client, document, variables, key=key, operation_name=file_name.removesuffix(".graphql")
    )
    assert result.errors == [], result.body
    data: dict[str, Any] = result.data
    return data


async def test_the_page_lists_every_event_an_endpoint_can_receive_with_its_meaning(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    page = await send(client, "WebhookEndpoints.graphql", tenant.admin_key)

    assert page["webhookEndpoints"] == []
    listed = {each["name"]: each["description"] for each in page["webhookEventTypes"]}
    assert list(listed) == [event.value for event in EventType]
    assert all(description.endswith(".") for description in listed.values())


async def test_an_endpoint_added_on_the_page_receives_signed_events_and_shows_its_deliveries(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, receiver: Receiver
) -> None:
    key = tenant.admin_key
    input = {"url": receiver.url, "events": ["key.created"], "description": "billing"}
    created = (await send(client, "CreateWebhookEndpoint.graphql", key, input=input))[
        "createWebhookEndpoint"
    ]
    assert created["userErrors"] == []
    endpoint, secret = created["endpoint"], created["signingSecret"]

    made = await make_key(runtime, tenant, "charger-app")
    await deliver_all(runtime)

    [received] = receiver.received
    assert received.verified_with(secret)["data"]["key"]["id"] == made.id
    deliveries = (await send(client, "WebhookDeliveries.graphql", key, endpointId=endpoint["id"]))[
        "webhookDeliveries"
    ]
    assert deliveries["totalCount"] == 1
    [delivery] = [edge["node"] for edge in deliveries["edges"]]
    assert delivery["eventType"] == "key.created"
    assert (delivery["status"], delivery["attempts"], delivery["responseStatus"]) == (
        "SUCCEEDED",
        1,
        200,
    )
    assert delivery["eventId"] == received.headers["webhook-id"]
    assert delivery["nextAttemptAt"] is None


async def test_pausing_enabling_rotating_and_deleting_an_endpoint_from_the_page(
    client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver
) -> None:
    key = tenant.admin_key
    input = {"url": receiver.url, "events": ["key.revoked"]}
    created = await send(client, "CreateWebhookEndpoint.graphql", key, input=input)
    endpoint_id = created["createWebhookEndpoint"]["endpoint"]["id"]

    async def update(**fields: Any) -> dict[str, Any]:
        answer = await send(
            client, "UpdateWebhookEndpoint.graphql", key, input={"id": endpoint_id, **fields}
        )
        payload: dict[str, Any] = answer["updateWebhookEndpoint"]
        assert payload["userErrors"] == []
        return payload

    paused = (await update(enabled=False))["endpoint"]
    assert (paused["enabled"], paused["disabledAt"] is not None) == (False, True)
    enabled = (await update(enabled=True))["endpoint"]
    assert (enabled["enabled"], enabled["disabledAt"]) == (True, None)
    edited = await update(events=["key.revoked", "key.leaked"], description="alerts")
    assert sorted(edited["endpoint"]["events"]) == ["key.leaked", "key.revoked"]
    assert edited["endpoint"]["url"] == receiver.url  # left out, left as it was

    rotated = (await send(client, "RotateWebhookSigningSecret.graphql", key, id=endpoint_id))[
        "rotateWebhookSigningSecret"
    ]
    assert rotated["signingSecret"].startswith("whsec_")
    assert rotated["signingSecret"] != created["createWebhookEndpoint"]["signingSecret"]
    overlap = datetime.fromisoformat(rotated["endpoint"]["previousSecretExpiresAt"]) - utcnow()
    assert timedelta(hours=23) < overlap <= timedelta(hours=24)

    deleted = (await send(client, "DeleteWebhookEndpoint.graphql", key, id=endpoint_id))[
        "deleteWebhookEndpoint"
    ]
    assert (deleted["endpoint"]["id"], deleted["userErrors"]) == (endpoint_id, [])
    page = await send(client, "WebhookEndpoints.graphql", key)
    assert page["webhookEndpoints"] == []
