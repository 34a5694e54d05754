"""``createApiKey`` and ``revokeApiKey``: what they do, and every bad input answered with a
userError (or FORBIDDEN) while the database keeps exactly what it held."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.kit.db import session_scope
from app.kit.ids import new_id
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.support import GraphQLResult, Tenant, gql, make_key, snapshot

CREATE = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) {
    apiKey { id name scopes hint createdAt expiresAt revokedAt lastUsedAt status }
    secret
    userErrors { code field message }
  }
}
"""

REVOKE = """
mutation Revoke($id: ID!) {
  revokeApiKey(id: $id) {
    apiKey { id name status revokedAt }
    userErrors { code field message }
  }
}
"""

LAST_USED = "query LastUsed($id: ID!) { apiKey(id: $id) { lastUsedAt } }"


async def _create(client: httpx.AsyncClient, key: str, **fields: Any) -> GraphQLResult:
    fields.setdefault("scopes", ["read:charge_points"])
    return await gql(client, CREATE, {"input": fields}, key=key)


def _created(result: GraphQLResult) -> dict[str, Any]:
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["createApiKey"]
    assert payload["userErrors"] == [], payload
    return payload


def _user_errors(result: GraphQLResult, mutation: str) -> list[dict[str, Any]]:
    """The userErrors of a refused mutation (which returns no key and no secret)."""
    assert result.response.status_code == 200
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data[mutation]
    assert payload["apiKey"] is None
    assert payload.get("secret") is None
    errors: list[dict[str, Any]] = payload["userErrors"]
    return errors


# --- createApiKey ---------------------------------------------------------------------------------


async def test_create_returns_the_key_and_its_secret_which_authenticates_as_that_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    payload = _created(
        await _create(
            client,
            tenant.admin_key,
            name="  charging app  ",
            scopes=["read:sessions", "read:charge_points", "read:sessions"],
            expiresInDays=30,
        )
    )
    secret, api_key = payload["secret"], payload["apiKey"]

    assert secret.startswith("kh_")
    assert api_key["name"] == "charging app"
    assert api_key["scopes"] == ["read:charge_points", "read:sessions"]
    assert api_key["hint"] == f"{secret[:7]}…{secret[-4:]}"
    assert api_key["status"] == "ACTIVE"
    assert api_key["revokedAt"] is None
    assert api_key["lastUsedAt"] is None
    created_at = datetime.fromisoformat(api_key["createdAt"])
    assert datetime.fromisoformat(api_key["expiresAt"]) == created_at + timedelta(days=30)

    used = await gql(client, "{ organization { id } }", key=secret)
    assert used.errors == []
    assert used.data == {"organization": {"id": tenant.organization_id}}
    # The use is reported under the id createApiKey returned; nothing else shows the secret.
    shown = await gql(client, LAST_USED, {"id": api_key["id"]}, key=tenant.admin_key)
    assert shown.data["apiKey"]["lastUsedAt"] is not None
    assert secret not in shown.response.text


@pytest.mark.parametrize(
    ("name", "expires_in_days"),
    [("n" * 128, 1), (" " + "n" * 128 + " ", 3650)],
    ids=["128 characters, 1 day", "128 characters after trimming, 3650 days"],
)
async def test_create_accepts_the_longest_name_and_the_shortest_and_longest_lifetimes(
    client: httpx.AsyncClient, tenant: Tenant, name: str, expires_in_days: int
) -> None:
    payload = _created(
        await _create(client, tenant.admin_key, name=name, expiresInDays=expires_in_days)
    )

    assert payload["apiKey"]["name"] == "n" * 128


async def test_a_key_created_without_expires_in_days_never_expires(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    payload = _created(await _create(client, tenant.admin_key, name="forever"))

    assert payload["apiKey"]["expiresAt"] is None


@pytest.mark.parametrize(
    ("fields", "code", "field", "message_part"),
    [
        pytest.param({"name": ""}, "INVALID_INPUT", "name", "empty", id="empty name"),
        pytest.param({"name": "   "}, "INVALID_INPUT", "name", "empty", id="blank name"),
        pytest.param({"name": "n" * 129}, "INVALID_INPUT", "name", "128", id="name over 128"),
        pytest.param({"scopes": []}, "INVALID_SCOPE", "scopes", "at least one", id="no scope"),
        pytest.param(
            {"scopes": ["read:charge_points", "read:chargepoints", "delete:everything"]},
            "INVALID_SCOPE",
            "scopes",
            "delete:everything, read:chargepoints",
            id="unknown scopes",
        ),
        pytest.param(
            {"expiresInDays": 0}, "INVALID_INPUT", "expiresInDays", "1 and 3650", id="0 days"
        ),
        pytest.param(
            {"expiresInDays": -1}, "INVALID_INPUT", "expiresInDays", "1 and 3650", id="-1 days"
        ),
        pytest.param(
            {"expiresInDays": 3651}, "INVALID_INPUT", "expiresInDays", "1 and 3650", id="3651 days"
        ),
    ],
)
async def test_invalid_create_input_is_a_user_error_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    fields: dict[str, Any],
    code: str,
    field: str,
    message_part: str,
) -> None:
    before = await snapshot(runtime)

    result = await _create(client, tenant.admin_key, **{"name": "valid name", **fields})

    [error] = _user_errors(result, "createApiKey")
    assert (error["code"], error["field"]) == (code, field)
    assert message_part in error["message"]
    assert await snapshot(runtime) == before


async def test_every_problem_of_one_input_is_reported_at_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    result = await _create(client, tenant.admin_key, name=" ", scopes=[], expiresInDays=0)

    errors = _user_errors(result, "createApiKey")
    assert sorted((e["code"], e["field"]) for e in errors) == [
        ("INVALID_INPUT", "expiresInDays"),
        ("INVALID_INPUT", "name"),
        ("INVALID_SCOPE", "scopes"),
    ]
    assert await snapshot(runtime) == before


@pytest.mark.parametrize("taken_by", ["active", "expired"])
@pytest.mark.parametrize("name", ["in use", "  in use "])
async def test_a_name_used_by_a_key_that_is_not_revoked_is_name_taken(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, taken_by: str, name: str
) -> None:
    existing = await make_key(runtime, tenant, "in use", expires_in_days=1)
    if taken_by == "expired":
        async with session_scope(runtime.sessionmaker) as session:
            row = await session.get(ApiKey, existing.id)
            assert row is not None
            row.expires_at = datetime.now(UTC) - timedelta(days=1)
            session.add(row)
    before = await snapshot(runtime)

    result = await _create(client, tenant.admin_key, name=name)

    [error] = _user_errors(result, "createApiKey")
    assert (error["code"], error["field"]) == ("NAME_TAKEN", "name")
    assert "'in use'" in error["message"]
    assert await snapshot(runtime) == before


async def test_a_revoked_keys_name_can_be_used_again(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    old = await make_key(runtime, tenant, "nightly export")
    revoked = await gql(client, REVOKE, {"id": old.id}, key=tenant.admin_key)
    assert revoked.data["revokeApiKey"]["userErrors"] == []

    payload = _created(await _create(client, tenant.admin_key, name="nightly export"))

    assert payload["apiKey"]["id"] != old.id


async def test_another_organizations_key_name_can_be_used(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    await make_key(runtime, other_tenant, "nightly export")

    payload = _created(await _create(client, tenant.admin_key, name="nightly export"))

    assert payload["apiKey"]["name"] == "nightly export"


@pytest.mark.parametrize(
    "scopes",
    [["read:billing"], ["read:charge_points", "read:billing"], ["read:api_keys"]],
)
async def test_a_key_cannot_create_a_key_with_a_scope_it_does_not_hold(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, scopes: list[str]
) -> None:
    manager = await make_key(runtime, tenant, "manager", ["write:api_keys", "read:charge_points"])
    before = await snapshot(runtime)

    result = await _create(client, manager.secret, name="escalation", scopes=scopes)

    [error] = _user_errors(result, "createApiKey")
    assert (error["code"], error["field"]) == ("FORBIDDEN", "scopes")
    assert scopes[-1] in error["message"]
    assert "read:charge_points" not in error["message"]
    assert await snapshot(runtime) == before


async def test_a_key_can_create_a_key_with_scopes_it_holds(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    manager = await make_key(runtime, tenant, "manager", ["write:api_keys", "read:charge_points"])

    payload = _created(
        await _create(
            client, manager.secret, name="child", scopes=["read:charge_points", "write:api_keys"]
        )
    )

    assert payload["apiKey"]["scopes"] == ["read:charge_points", "write:api_keys"]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (CREATE, lambda _: {"input": {"name": "not allowed", "scopes": ["read:charge_points"]}}),
        (REVOKE, lambda own_id: {"id": own_id}),
    ],
    ids=["createApiKey", "revokeApiKey"],
)
async def test_managing_keys_without_write_api_keys_is_forbidden_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    query: str,
    variables: Callable[[str], dict[str, Any]],
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:api_keys", "read:charge_points"])
    before = await snapshot(runtime)

    result = await gql(client, query, variables(reader.id), key=reader.secret)

    assert result.response.status_code == 200
    assert result.data is None
    [error] = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "write:api_keys"}
    assert await snapshot(runtime) == before


# --- revokeApiKey ---------------------------------------------------------------------------------


async def test_revoke_answers_the_key_as_revoked_now(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "leaked")

    result = await gql(client, REVOKE, {"id": key.id}, key=tenant.admin_key)

    assert result.errors == []
    payload = result.data["revokeApiKey"]
    assert payload["userErrors"] == []
    revoked_at = datetime.fromisoformat(payload["apiKey"].pop("revokedAt"))
    assert abs(datetime.now(UTC) - revoked_at) < timedelta(minutes=1)
    assert payload["apiKey"] == {"id": key.id, "name": "leaked", "status": "REVOKED"}


async def test_revoking_twice_answers_the_same_revoked_at_and_changes_nothing_more(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "leaked")
    first = await gql(client, REVOKE, {"id": key.id}, key=tenant.admin_key)
    after_first = await snapshot(runtime)

    second = await gql(client, REVOKE, {"id": key.id}, key=tenant.admin_key)

    assert second.body == first.body
    assert await snapshot(runtime) == after_first


@pytest.mark.parametrize("which", ["unknown", "malformed", "another organization's"])
async def test_revoking_an_id_that_is_not_one_of_the_callers_keys_is_the_same_not_found(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant, which: str
) -> None:
    foreign = await make_key(runtime, other_tenant, "globex")
    target = {
        "unknown": new_id("key"),
        "malformed": "key_' OR 1=1 --",
        "another organization's": foreign.id,
    }[which]
    before = await snapshot(runtime)

    result = await gql(client, REVOKE, {"id": target}, key=tenant.admin_key)

    # One answer for all three (only the id it names differs): nothing tells them apart.
    [error] = _user_errors(result, "revokeApiKey")
    assert error == {
        "code": "NOT_FOUND",
        "field": "id",
        "message": f"No API key with id '{target}'.",
    }
    assert await snapshot(runtime) == before
    still = await gql(client, "{ organization { id } }", key=foreign.secret)
    assert still.errors == []


# --- secrets --------------------------------------------------------------------------------------


async def test_no_secret_or_hash_appears_in_any_response_or_log_line(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    responses: list[str] = []

    created = await _create(client, tenant.admin_key, name="integration", expiresInDays=7)
    secret = _created(created)["secret"]
    responses.append(created.response.text.replace(f'"secret":"{secret}"', '"secret":null'))
    key_id = created.data["createApiKey"]["apiKey"]["id"]
    every_field = """
      id name scopes hint createdAt lastUsedAt expiresAt revokedAt status supersededAt
      expiresInDays deprecated supersededBy { id } rateLimit { requests perSeconds isDefault }
    """
    for query, variables in [
        (f"{{ apiKeys(filter: {{status: ALL}}) {{ nodes {{ {every_field} }} }} }}", None),
        (f"query($id: ID!) {{ apiKey(id: $id) {{ {every_field} }} }}", {"id": key_id}),
        ("{ organization { id name keyCounts { total } } }", None),
    ]:
        responses.append((await gql(client, query, variables, key=secret)).response.text)
        responses.append((await gql(client, query, variables, key=tenant.admin_key)).response.text)
    verified = await client.post("/v1/keys/verify", json={"key": secret})
    assert verified.json()["valid"] is True
    responses.append(verified.text)
    responses.append(
        (await gql(client, REVOKE, {"id": key_id}, key=tenant.admin_key)).response.text
    )
    refused = await gql(client, "{ organization { id } }", key=secret)
    assert refused.response.status_code == 401
    responses.append(refused.response.text)
    await runtime.recorder.flush()

    async with runtime.engine.connect() as connection:
        hashes = (await connection.execute(text("SELECT key_hash FROM api_keys"))).scalars().all()
    assert len(hashes) == 2
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged  # the requests were logged at all
    for value in [secret, tenant.admin_key, *hashes]:
        for response in responses:
            assert value not in response
        assert value not in logged
