"""The organization's key policy: single active key with an optional grace period, a
bound on key lifetime and required expiry; ``updateKeyPolicy`` and its effect on createApiKey."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.kit.timeutil import utcnow
from app.runtime import Runtime
from tests.lifecycle_support import (
    CREATE_KEY,
    SURFACES,
    UPDATE_POLICY,
    Surface,
    accepted,
    api_key,
    create_key,
    mutate,
    parse_time,
    refusal,
    revoke,
    travel,
    update_policy,
)
from tests.support import Tenant, gql, make_key, snapshot

POLICY = """
{
  organization {
    keyPolicy { singleActiveKey supersedeGraceHours maxExpiresInDays requireExpiry }
  }
}
"""

NO_POLICY = {
    "singleActiveKey": False,
    "supersedeGraceHours": 0,
    "maxExpiresInDays": None,
    "requireExpiry": False,
}

MANAGER_SCOPES = ["read:api_keys", "write:api_keys", "read:charge_points"]


async def policy_of(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    result = await gql(client, POLICY, key=key)
    assert result.errors == [], result.errors
    policy: dict[str, Any] = result.data["organization"]["keyPolicy"]
    return policy


# --- reading and changing the policy --------------------------------------------------------------


async def test_new_organization_has_no_key_policy(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    assert await policy_of(client, tenant.admin_key) == NO_POLICY


async def test_policy_update_answers_and_stores_the_new_policy(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    wanted = {
        "singleActiveKey": True,
        "supersedeGraceHours": 48,
        "maxExpiresInDays": 90,
        "requireExpiry": True,
    }

    payload = await update_policy(client, tenant.admin_key, **wanted)

    assert payload["organization"]["keyPolicy"] == wanted
    assert await policy_of(client, tenant.admin_key) == wanted


async def test_policy_update_keeps_the_fields_it_omits(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await update_policy(
        client, tenant.admin_key, singleActiveKey=True, supersedeGraceHours=12, maxExpiresInDays=30
    )

    payload = await update_policy(client, tenant.admin_key, requireExpiry=True)

    assert payload["organization"]["keyPolicy"] == {
        "singleActiveKey": True,
        "supersedeGraceHours": 12,
        "maxExpiresInDays": 30,
        "requireExpiry": True,
    }


async def test_max_expires_in_days_null_removes_the_bound(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await update_policy(client, tenant.admin_key, maxExpiresInDays=30)

    payload = await update_policy(client, tenant.admin_key, maxExpiresInDays=None)

    assert payload["organization"]["keyPolicy"]["maxExpiresInDays"] is None
    await create_key(client, tenant.admin_key, name="forever")


@pytest.mark.parametrize(
    "field_value",
    [
        {"supersedeGraceHours": 0},
        {"supersedeGraceHours": 720},
        {"maxExpiresInDays": 1},
        {"maxExpiresInDays": 3650},
    ],
    ids=["grace 0", "grace 720", "max 1 day", "max 3650 days"],
)
async def test_policy_accepts_the_bounds_of_each_range(
    client: httpx.AsyncClient, tenant: Tenant, field_value: dict[str, int]
) -> None:
    payload = await update_policy(client, tenant.admin_key, **field_value)

    ((field, value),) = field_value.items()
    assert payload["organization"]["keyPolicy"][field] == value


@pytest.mark.parametrize(
    ("bad_input", "field", "message"),
    [
        ({"supersedeGraceHours": -1}, "supersedeGraceHours", "between 0 and 720, got -1"),
        ({"supersedeGraceHours": 721}, "supersedeGraceHours", "between 0 and 720, got 721"),
        ({"maxExpiresInDays": 0}, "maxExpiresInDays", "between 1 and 3650"),
        ({"maxExpiresInDays": -30}, "maxExpiresInDays", "got -30"),
        ({"maxExpiresInDays": 3651}, "maxExpiresInDays", "got 3651"),
        # One bad field refuses the whole update: the valid one is not applied either.
        (
            {"singleActiveKey": True, "supersedeGraceHours": 10_000},
            "supersedeGraceHours",
            "got 10000",
        ),
    ],
    ids=[
        "negative grace",
        "grace over 720",
        "max 0 days",
        "negative max",
        "max over 3650",
        "valid field beside a bad one",
    ],
)
async def test_policy_update_with_a_bad_value_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    bad_input: dict[str, Any],
    field: str,
    message: str,
) -> None:
    before = await snapshot(runtime)

    payload = await mutate(client, UPDATE_POLICY, "updateKeyPolicy", tenant.admin_key, **bad_input)

    (error,) = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == field
    assert message in error["message"]
    assert payload["organization"] is None
    assert await snapshot(runtime) == before


async def test_policy_update_reports_every_bad_field_at_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    payload = await mutate(
        client,
        UPDATE_POLICY,
        "updateKeyPolicy",
        tenant.admin_key,
        supersedeGraceHours=-1,
        maxExpiresInDays=0,
    )

    assert {(e["code"], e["field"]) for e in payload["userErrors"]} == {
        ("INVALID_INPUT", "supersedeGraceHours"),
        ("INVALID_INPUT", "maxExpiresInDays"),
    }
    assert await snapshot(runtime) == before


async def test_policy_update_needs_write_api_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:api_keys"])
    before = await snapshot(runtime)

    result = await gql(
        client, UPDATE_POLICY, {"input": {"singleActiveKey": True}}, key=reader.secret
    )

    (error,) = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "write:api_keys"}
    assert "write:api_keys" in error["message"]
    assert result.data is None
    assert await snapshot(runtime) == before


# --- single active key ----------------------------------------------------------------------------


async def test_turning_on_single_active_key_supersedes_nothing_and_counts_what_the_next_key_will(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    home_assistant = await make_key(runtime, tenant, "home assistant")
    script = await make_key(runtime, tenant, "script")
    await revoke(client, tenant.admin_key, (await make_key(runtime, tenant, "old")).id)

    payload = await update_policy(client, tenant.admin_key, singleActiveKey=True)

    # The two live integrations, not the revoked key, nor the admin key making the request.
    assert payload["keysToSupersede"] == 2
    for key in (home_assistant, script):
        await accepted(client, "verify", key.secret)
        assert (await api_key(client, tenant.admin_key, key.id))["status"] == "ACTIVE"


async def test_keys_to_supersede_is_zero_while_single_active_key_is_off(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await make_key(runtime, tenant, "integration")

    payload = await update_policy(client, tenant.admin_key, maxExpiresInDays=30)

    assert payload["keysToSupersede"] == 0


async def test_creating_a_key_supersedes_every_other_active_key_but_the_callers(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    manager = await make_key(runtime, tenant, "manager", MANAGER_SCOPES)
    integration = await make_key(runtime, tenant, "integration")
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    created = await create_key(client, manager.secret, name="newest")

    superseded = {key["id"]: key["status"] for key in created["supersededApiKeys"]}
    assert superseded == {tenant.admin_key_id: "SUPERSEDED", integration.id: "SUPERSEDED"}
    # The caller is never locked out, and the new key works.
    await accepted(client, "graphql", manager.secret)
    await accepted(client, "verify", created["secret"])
    for secret in (tenant.admin_key, integration.secret):
        assert (await refusal(client, "verify", secret))[0] == "SUPERSEDED"


@pytest.mark.parametrize("surface", SURFACES)
async def test_superseded_key_is_refused_everywhere_saying_when_and_by_which_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, surface: Surface
) -> None:
    old = await make_key(runtime, tenant, "home assistant")
    await accepted(client, surface, old.secret)  # cached as valid
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    new = (await create_key(client, tenant.admin_key, name="home assistant 2025"))["apiKey"]

    reason, message = await refusal(client, surface, old.secret)
    assert reason == "SUPERSEDED"
    assert "key 'home assistant 2025'" in message
    assert new["hint"] in message
    stored = await api_key(client, tenant.admin_key, old.id)
    assert stored["status"] == "SUPERSEDED"
    assert parse_time(stored["supersededAt"]).strftime("%Y-%m-%dT%H:%M:%SZ") in message


async def test_superseded_keys_keep_working_until_the_policy_grace_period_ends(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = await make_key(runtime, tenant, "script")
    await update_policy(client, tenant.admin_key, singleActiveKey=True, supersedeGraceHours=24)

    created = await create_key(client, tenant.admin_key, name="new script")

    (pending,) = created["supersededApiKeys"]
    assert pending["id"] == old.id
    assert pending["status"] == "ACTIVE"
    assert pending["deprecated"] is True
    sunset = parse_time(pending["supersededAt"])
    assert abs(sunset - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)
    body = (await accepted(client, "verify", old.secret)).json()
    assert body["deprecated"] is True
    assert parse_time(body["sunset"]) == sunset

    travel(monkeypatch, timedelta(hours=24, minutes=1))

    assert (await refusal(client, "verify", old.secret))[0] == "SUPERSEDED"
    await accepted(client, "verify", created["secret"])


async def test_a_key_in_its_grace_period_is_not_superseded_again_by_a_later_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    old = await make_key(runtime, tenant, "script")
    await update_policy(client, tenant.admin_key, singleActiveKey=True, supersedeGraceHours=24)
    first = await create_key(client, tenant.admin_key, name="first")

    second = await create_key(client, tenant.admin_key, name="second")

    # The first replacement is superseded now; the old key keeps its original replacement and end.
    assert [key["id"] for key in second["supersededApiKeys"]] == [first["apiKey"]["id"]]
    (pending,) = first["supersededApiKeys"]
    assert (await api_key(client, tenant.admin_key, old.id))["supersededAt"] == pending[
        "supersededAt"
    ]


async def test_single_active_key_of_one_organization_leaves_another_alone(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    neighbour = await make_key(runtime, other_tenant, "neighbour")
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    await create_key(client, tenant.admin_key, name="ours")

    await accepted(client, "verify", neighbour.secret)
    await accepted(client, "graphql", other_tenant.admin_key)


# --- lifetime policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "key_input", "named_policy"),
    [
        ({"requireExpiry": True}, {}, "requireExpiry"),
        ({"maxExpiresInDays": 30}, {"expiresInDays": 31}, "maxExpiresInDays"),
        ({"maxExpiresInDays": 30}, {}, "maxExpiresInDays"),
        ({"maxExpiresInDays": 30, "requireExpiry": True}, {"expiresInDays": 3650}, "30 days"),
    ],
    ids=["no expiry under requireExpiry", "over the bound", "no expiry under a bound", "far over"],
)
async def test_creating_a_key_outside_the_policy_is_invalid_input_naming_the_policy(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    policy: dict[str, Any],
    key_input: dict[str, Any],
    named_policy: str,
) -> None:
    await update_policy(client, tenant.admin_key, **policy)
    before = await snapshot(runtime)

    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name="integration",
        scopes=["read:charge_points"],
        **key_input,
    )

    (error,) = payload["userErrors"]
    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "expiresInDays"
    assert "key policy" in error["message"]
    assert named_policy in error["message"]
    assert payload["apiKey"] is None
    assert payload["secret"] is None
    assert await snapshot(runtime) == before


async def test_key_within_the_lifetime_policy_is_created(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await update_policy(client, tenant.admin_key, maxExpiresInDays=30, requireExpiry=True)

    created = await create_key(client, tenant.admin_key, name="monthly", expiresInDays=30)

    assert created["apiKey"]["expiresAt"] is not None


async def test_lifetime_policy_applies_to_new_keys_only(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    forever = await make_key(runtime, tenant, "forever")

    await update_policy(client, tenant.admin_key, maxExpiresInDays=30, requireExpiry=True)

    await accepted(client, "verify", forever.secret)
