"""updateApiKey: a key changed after it was made (name, scopes, rate limit, metadata, allowlist,
credits, enabled), each change audited and seen by the very next verification; every bad input
a clear INVALID_INPUT naming the field, with nothing changed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.presentation import Presentation
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot

UPDATE_KEY = """
mutation UpdateKey($input: UpdateApiKeyInput!) {
  updateApiKey(input: $input) {
    apiKey {
      id name scopes status enabled meta ipAllowlist
      rateLimit { requests perSeconds isDefault }
      credits { remaining refill { amount interval } refillAt }
    }
    userErrors { code field message }
  }
}
"""

AUDIT = """
{ auditLog(first: 5, filter: {action: KEY_UPDATED}) { nodes { action apiKey { id } details } } }
"""


async def update(client: httpx.AsyncClient, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    result = await gql(client, UPDATE_KEY, {"input": fields}, key=key)
    assert result.errors == [], result.body
    payload: dict[str, Any] = result.data["updateApiKey"]
    return payload


def changed(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["userErrors"] == [], payload
    api_key: dict[str, Any] = payload["apiKey"]
    return api_key


async def outcome(runtime: Runtime, secret: str, **options: Any) -> str:
    verification = await runtime.verifier.verify(Presentation.of(secret), **options)
    return verification.outcome.value


@pytest.fixture
async def key(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    issued = await make_key(runtime, tenant, "integration", ["read:charge_points", "read:billing"])
    # Cached as valid: what follows must reach it through the cache's invalidation.
    assert await outcome(runtime, issued.secret) == "VALID"
    return issued


# --- what changes -------------------------------------------------------------------------------


async def test_only_the_fields_given_change(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "name": "renamed"}))

    assert api_key["name"] == "renamed"
    assert api_key["scopes"] == ["read:billing", "read:charge_points"]
    assert api_key["enabled"] is True
    assert api_key["meta"] is None
    assert api_key["ipAllowlist"] == []
    assert api_key["credits"] is None
    assert api_key["rateLimit"]["isDefault"] is True


async def test_disabling_pauses_the_key_at_once_and_enabling_resumes_it(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    paused = changed(await update(client, tenant.admin_key, {"id": key.id, "enabled": False}))
    assert (paused["status"], paused["enabled"]) == ("DISABLED", False)
    verification = await runtime.verifier.verify(Presentation.of(key.secret))
    assert verification.outcome.value == "DISABLED"
    assert "ask them to enable it" in verification.hint

    resumed = changed(await update(client, tenant.admin_key, {"id": key.id, "enabled": True}))
    assert resumed["status"] == "ACTIVE"
    assert await outcome(runtime, key.secret) == "VALID"


async def test_a_disabled_key_keeps_its_name_and_is_listed_as_disabled(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    changed(await update(client, tenant.admin_key, {"id": key.id, "enabled": False}))
    query = "query($s: ApiKeyStatusFilter) { apiKeys(filter: {status: $s}) { nodes { id } } }"

    disabled = await gql(client, query, {"s": "DISABLED"}, key=tenant.admin_key)
    active = await gql(client, query, {"s": "ACTIVE"}, key=tenant.admin_key)

    assert [node["id"] for node in disabled.data["apiKeys"]["nodes"]] == [key.id]
    assert key.id not in [node["id"] for node in active.data["apiKeys"]["nodes"]]


async def test_narrowed_scopes_hold_from_the_next_verification(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    api_key = changed(
        await update(client, tenant.admin_key, {"id": key.id, "scopes": ["read:charge_points"]})
    )

    assert api_key["scopes"] == ["read:charge_points"]
    assert await outcome(runtime, key.secret, required_scopes=["read:billing"]) == (
        "INSUFFICIENT_SCOPE"
    )
    # The scope filter reads the key's scope rows: they changed with it.
    listed = await gql(
        client,
        '{ apiKeys(filter: {scope: "read:billing"}) { nodes { id } } }',
        key=tenant.admin_key,
    )
    assert key.id not in [node["id"] for node in listed.data["apiKeys"]["nodes"]]


async def test_meta_is_returned_by_graphql_and_by_verification(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    meta = {"customerId": "cus_123", "plan": {"name": "pro", "seats": [1, 2]}}

    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "meta": meta}))

    assert api_key["meta"] == meta
    answer = (await client.post("/v1/keys/verify", json={"key": key.secret})).json()
    assert answer["meta"] == meta
    cleared = changed(await update(client, tenant.admin_key, {"id": key.id, "meta": None}))
    assert cleared["meta"] is None


async def test_a_rate_limit_set_to_null_goes_back_to_the_default(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    own = {"id": key.id, "rateLimit": {"requests": 5, "perSeconds": 60}}
    assert changed(await update(client, tenant.admin_key, own))["rateLimit"]["requests"] == 5

    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "rateLimit": None}))

    assert api_key["rateLimit"]["isDefault"] is True


async def test_credits_with_a_refill_show_the_balance_and_the_next_refill(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    credits = {"remaining": 10, "refill": {"amount": 100, "interval": "DAILY"}}

    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "credits": credits}))

    assert api_key["credits"]["remaining"] == 10
    assert api_key["credits"]["refill"] == {"amount": 100, "interval": "DAILY"}
    assert api_key["credits"]["refillAt"].endswith("T00:00:00+00:00")


async def test_each_change_is_one_audit_event_listing_old_and_new(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> None:
    fields = {
        "id": key.id,
        "name": "renamed",
        "enabled": False,
        "ipAllowlist": ["203.0.113.0/24"],
        "credits": {"remaining": 5},
    }
    changed(await update(client, tenant.admin_key, fields))

    (event,) = (await gql(client, AUDIT, key=tenant.admin_key)).data["auditLog"]["nodes"]
    assert (event["action"], event["apiKey"]["id"]) == ("KEY_UPDATED", key.id)
    details = event["details"]
    assert details["changes"] == {
        "name": {"old": "integration", "new": "renamed"},
        "enabled": {"old": True, "new": False},
        "ipAllowlist": {"old": [], "new": ["203.0.113.0/24"]},
        "credits": {"old": None, "new": {"remaining": 5, "refill": None}},
    }
    assert key.secret not in json.dumps(details)


async def test_an_update_that_changes_nothing_records_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    before = await snapshot(runtime)

    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "name": "integration"}))

    assert api_key["name"] == "integration"
    after = await snapshot(runtime)
    assert after["audit_events"] == before["audit_events"]
    assert after["api_keys"] == before["api_keys"]


# --- who may change what ------------------------------------------------------------------------


async def test_a_key_cannot_widen_a_keys_scopes_beyond_its_own(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    manager = await make_key(
        runtime,
        tenant,
        "manager",
        ["write:api_keys", "read:api_keys", "read:charge_points", "read:billing"],
    )
    before = await snapshot(runtime)

    payload = await update(
        client, manager.secret, {"id": key.id, "scopes": ["read:charge_points", "write:billing"]}
    )

    (error,) = payload["userErrors"]
    assert (error["code"], error["field"]) == ("FORBIDDEN", "scopes")
    assert "write:billing" in error["message"]
    assert await snapshot(runtime) == before


async def test_a_weaker_key_cannot_update_a_key_holding_more(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    weaker = await make_key(runtime, tenant, "weaker", ["write:api_keys", "read:charge_points"])
    before = await snapshot(runtime)

    payload = await update(client, weaker.secret, {"id": key.id, "enabled": True})

    (error,) = payload["userErrors"]
    assert error["code"] == "FORBIDDEN"
    assert await snapshot(runtime) == before


async def test_another_organizations_key_and_an_unknown_id_are_the_same_not_found(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await make_key(runtime, other_tenant, "theirs")
    before = await snapshot(runtime)

    for key_id in (theirs.id, "key_" + "0" * 22, "not an id"):
        payload = await update(client, tenant.admin_key, {"id": key_id, "enabled": False})
        (error,) = payload["userErrors"]
        assert (error["code"], error["field"]) == ("NOT_FOUND", "id")
    assert await snapshot(runtime) == before
    assert await outcome(runtime, theirs.secret) == "VALID"


async def test_a_revoked_key_cannot_be_enabled_or_changed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }"
    await gql(client, revoke, {"id": key.id}, key=tenant.admin_key)
    before = await snapshot(runtime)

    payload = await update(client, tenant.admin_key, {"id": key.id, "enabled": True})

    (error,) = payload["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "id")
    assert "revoked" in error["message"]
    assert await snapshot(runtime) == before


async def test_a_name_another_live_key_has_is_name_taken(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    await make_key(runtime, tenant, "Deploy")
    before = await snapshot(runtime)

    payload = await update(client, tenant.admin_key, {"id": key.id, "name": "DEPLOY"})

    (error,) = payload["userErrors"]
    assert error["code"] == "NAME_TAKEN"
    assert await snapshot(runtime) == before


# --- bad input ----------------------------------------------------------------------------------

DEEP = {"a": {"b": {"c": {"d": 1}}}}
BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("meta", ["not", "an", "object"], "JSON object"),
    ("meta", "text", "JSON object"),
    ("meta", {"a": "x" * 2050, "b": "y" * 2050}, "at most 4096 bytes"),
    ("meta", {f"k{n}": n for n in range(33)}, "at most 32 keys"),
    ("meta", DEEP, "at most 3 levels"),
    ("ipAllowlist", [f"10.0.{n // 256}.{n % 256}" for n in range(101)], "at most 100"),
    ("ipAllowlist", ["10.0.0.0/8", "10.0.0.0/33"], "entry 1 '10.0.0.0/33'"),
    ("ipAllowlist", ["example.com"], "not an IPv4 or IPv6"),
    ("ipAllowlist", ["10.0.0.1/24"], "host bits"),
    ("credits", {"remaining": -1}, "between 0 and 1,000,000,000"),
    ("credits", {"remaining": 1_000_000_001}, "between 0 and 1,000,000,000"),
    ("credits", {"remaining": 5, "refill": {"amount": 0, "interval": "DAILY"}}, "amount"),
    ("name", "   ", "empty"),
    ("name", None, "empty"),
    ("scopes", [], "at least one scope"),
    ("scopes", None, "at least one scope"),
    ("enabled", None, "cannot be null"),
    ("rateLimit", {"requests": 0, "perSeconds": 60}, "rateLimit"),
]


@pytest.mark.parametrize(("field", "value", "says"), BAD_INPUTS)
async def test_a_bad_field_is_a_user_error_naming_it_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    key: IssuedKey,
    field: str,
    value: Any,
    says: str,
) -> None:
    before = await snapshot(runtime)

    payload = await update(client, tenant.admin_key, {"id": key.id, field: value})

    assert payload["apiKey"] is None
    (error,) = payload["userErrors"]
    code = "INVALID_SCOPE" if field == "scopes" else "INVALID_INPUT"
    assert (error["code"], error["field"]) == (code, field), error
    assert says in error["message"], error
    assert await snapshot(runtime) == before
    assert await outcome(runtime, key.secret) == "VALID"


async def test_an_unknown_refill_interval_is_refused_before_anything_runs(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    before = await snapshot(runtime)
    credits = {"remaining": 5, "refill": {"amount": 5, "interval": "HOURLY"}}

    result = await gql(
        client, UPDATE_KEY, {"input": {"id": key.id, "credits": credits}}, key=tenant.admin_key
    )

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert "HOURLY" in result.errors[0]["message"]
    assert await snapshot(runtime) == before


async def test_meta_at_the_limits_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: IssuedKey
) -> None:
    meta = {f"k{n}": {"b": {"c": n}} for n in range(32)}

    api_key = changed(await update(client, tenant.admin_key, {"id": key.id, "meta": meta}))

    assert api_key["meta"] == meta
    async with runtime.engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT meta FROM api_keys WHERE id = :id"), {"id": key.id}
            )
        ).scalar_one()
    assert json.loads(stored) == meta
