"""Helpers for the webhook tests: an endpoint made through GraphQL, the worker run by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from app.runtime import Runtime
from tests.support import Tenant, gql

CREATE_ENDPOINT = """
mutation Create($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) {
    endpoint { id url events enabled description }
    signingSecret
    userErrors { code field message }
  }
}
"""

ALL_KEY_EVENTS = [
    "key.created",
    "key.revoked",
    "key.rotated",
    "key.superseded",
    "key.expiring",
    "key.expired",
    "key.leaked",
    "policy.updated",
]


@dataclass(frozen=True)
class Endpoint:
    id: str
    secret: str


async def create_endpoint(
    client: httpx.AsyncClient,
    tenant: Tenant,
    url: str,
    events: list[str] | None = None,
) -> Endpoint:
    result = await gql(
        client,
        CREATE_ENDPOINT,
        {"input": {"url": url, "events": events or ALL_KEY_EVENTS}},
        key=tenant.admin_key,
    )
    payload = result.data["createWebhookEndpoint"]
    assert payload["userErrors"] == [], payload
    return Endpoint(payload["endpoint"]["id"], payload["signingSecret"])


async def deliver_all(runtime: Runtime, *, rounds: int = 20) -> None:
    """Runs the worker's steps until it has nothing left to do now."""
    for _ in range(rounds):
        if not await runtime.webhooks.step():
            return


async def rows(runtime: Runtime, statement: str) -> list[Any]:
    async with runtime.engine.connect() as connection:
        return list((await connection.execute(text(statement))).all())


async def rows_in(database_url: str, statement: str) -> list[Any]:
    from app.kit.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(statement))).all())
    finally:
        await engine.dispose()
