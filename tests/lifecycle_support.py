"""Helpers for the key-lifecycle tests (issue 5): policy, rotation, idempotency, expiry notices
and the audit log share these GraphQL documents, the clock and the three places a key is used."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal

import httpx
import pytest

import app.kit.timeutil
from tests.support import gql

CREATE_KEY = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey { id name hint scopes status expiresAt supersededAt deprecated }
    secret
    supersededApiKeys { id status supersededAt deprecated }
    userErrors { code field message }
  }
}
"""

ROTATE_KEY = """
mutation Rotate($input: RotateApiKeyInput!) {
  rotateApiKey(input: $input) {
    apiKey {
      id name hint scopes status expiresAt
      rateLimit { requests perSeconds isDefault }
    }
    secret
    previousApiKey {
      id name hint status deprecated supersededAt
      supersededBy { id hint }
    }
    userErrors { code field message }
  }
}
"""

UPDATE_POLICY = """
mutation UpdatePolicy($input: UpdateKeyPolicyInput!) {
  updateKeyPolicy(input: $input) {
    organization {
      keyPolicy { singleActiveKey supersedeGraceHours maxExpiresInDays requireExpiry }
    }
    keysToSupersede
    userErrors { code field message }
  }
}
"""

REVOKE_KEY = """
mutation Revoke($id: ID!) {
  revokeApiKey(id: $id) { apiKey { id status } userErrors { code field message } }
}
"""

API_KEY = """
query Key($id: ID!) {
  apiKey(id: $id) { id name status deprecated supersededAt expiresInDays lastUsedAt }
}
"""


async def mutate(
    client: httpx.AsyncClient, document: str, field: str, key: str, **input: Any
) -> dict[str, Any]:
    """Run a mutation taking ``input`` and return its payload (whether or not it succeeded)."""
    result = await gql(client, document, {"input": input}, key=key)
    assert result.response.status_code == 200, result.body
    assert result.errors == [], result.errors
    payload: dict[str, Any] = result.data[field]
    return payload


async def create_key(client: httpx.AsyncClient, key: str, **input: Any) -> dict[str, Any]:
    """createApiKey that must succeed; ``scopes`` defaults to one product scope."""
    input.setdefault("scopes", ["read:charge_points"])
    payload = await mutate(client, CREATE_KEY, "createApiKey", key, **input)
    assert payload["userErrors"] == [], payload
    return payload


async def rotate_key(client: httpx.AsyncClient, key: str, **input: Any) -> dict[str, Any]:
    payload = await mutate(client, ROTATE_KEY, "rotateApiKey", key, **input)
    assert payload["userErrors"] == [], payload
    return payload


async def update_policy(client: httpx.AsyncClient, key: str, **input: Any) -> dict[str, Any]:
    payload = await mutate(client, UPDATE_POLICY, "updateKeyPolicy", key, **input)
    assert payload["userErrors"] == [], payload
    return payload


async def revoke(client: httpx.AsyncClient, key: str, key_id: str) -> None:
    result = await gql(client, REVOKE_KEY, {"id": key_id}, key=key)
    assert result.data["revokeApiKey"]["userErrors"] == [], result.body


async def api_key(client: httpx.AsyncClient, key: str, key_id: str) -> dict[str, Any]:
    result = await gql(client, API_KEY, {"id": key_id}, key=key)
    assert result.errors == [], result.errors
    node: dict[str, Any] = result.data["apiKey"]
    return node


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the clock --------------------------------------------------------------------------------

_real_time = time.time
_real_datetime = datetime


class _ShiftedDatetime:
    """Stands in for ``datetime`` inside app.kit.timeutil, whose ``utcnow`` every service uses."""

    def __init__(self, by: timedelta) -> None:
        self._by = by

    def now(self, tz: tzinfo | None = None) -> datetime:
        return _real_datetime.now(tz) + self._by


def travel(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Move keyhouse's clock ``by`` from the real now: the services' ``utcnow`` and the hot
    path's ``time.time`` alike (cached keys included: nothing is reloaded)."""
    monkeypatch.setattr(app.kit.timeutil, "datetime", _ShiftedDatetime(by))
    monkeypatch.setattr(time, "time", lambda: _real_time() + by.total_seconds())


# --- the three places a key is presented --------------------------------------------------------

Surface = Literal["graphql", "verify", "forward-auth"]
SURFACES: tuple[Surface, ...] = ("graphql", "verify", "forward-auth")


async def refusal(client: httpx.AsyncClient, surface: Surface, secret: str) -> tuple[str, str]:
    """Present ``secret`` on ``surface`` and return the refusal's (reason, message)."""
    if surface == "graphql":
        result = await gql(client, "{ organization { id } }", key=secret)
        assert result.response.status_code == 401, result.body
        (error,) = result.errors
        assert error["extensions"]["code"] == "UNAUTHORIZED"
        return error["extensions"]["reason"], error["message"]
    if surface == "verify":
        response = await client.post("/v1/keys/verify", json={"key": secret})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["valid"] is False
        assert body["keyId"] is None
        return body["code"], body["message"]
    response = await client.get("/v1/auth", headers={"X-API-Key": secret})
    assert response.status_code == 401, response.text
    assert "X-Api-Key-Id" not in response.headers
    body = response.json()
    return body["code"], body["message"]


async def accepted(client: httpx.AsyncClient, surface: Surface, secret: str) -> httpx.Response:
    """Present ``secret`` on ``surface``; it must be accepted. Returns the HTTP response."""
    if surface == "graphql":
        result = await gql(client, "{ organization { id } }", key=secret)
        assert result.response.status_code == 200, result.body
        assert result.errors == [], result.errors
        return result.response
    if surface == "verify":
        response = await client.post("/v1/keys/verify", json={"key": secret})
        assert response.json()["valid"] is True, response.text
        return response
    response = await client.get("/v1/auth", headers={"X-API-Key": secret})
    assert response.status_code == 200, response.text
    return response
