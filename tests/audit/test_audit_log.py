"""The audit log: every key creation, revocation, rotation, supersession and policy change, with
the acting key, the time and what changed; never a secret; one organization's only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.kit.timeutil import utcnow
from app.runtime import Runtime
from tests.lifecycle_support import (
    CREATE_KEY,
    REVOKE_KEY,
    ROTATE_KEY,
    UPDATE_POLICY,
    create_key,
    mutate,
    parse_time,
    revoke,
    rotate_key,
    update_policy,
)
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot

AUDIT_LOG = """
query AuditLog($first: Int! = 20, $after: String, $filter: AuditLogFilter) {
  auditLog(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage endCursor }
    edges {
      cursor
      node { id action occurredAt actor { id hint } apiKey { id name } details }
    }
  }
}
"""


async def audit_log(client: httpx.AsyncClient, key: str, **variables: Any) -> dict[str, Any]:
    result = await gql(client, AUDIT_LOG, variables, key=key)
    assert result.errors == [], result.errors
    connection: dict[str, Any] = result.data["auditLog"]
    return connection


async def events(client: httpx.AsyncClient, tenant: Tenant, action: str) -> list[dict[str, Any]]:
    """The tenant's events of one action, newest first."""
    connection = await audit_log(client, tenant.admin_key, filter={"action": action}, first=100)
    return [edge["node"] for edge in connection["edges"]]


def assert_by_admin(event: dict[str, Any], tenant: Tenant) -> None:
    assert event["actor"]["id"] == tenant.admin_key_id
    assert event["actor"]["hint"] == tenant.admin_key[:7] + "…" + tenant.admin_key[-4:]
    assert abs(parse_time(event["occurredAt"]) - utcnow()) < timedelta(minutes=1)


@pytest.fixture
async def integration(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "integration", ["read:charge_points"])


# --- what is recorded -----------------------------------------------------------------------------


async def test_key_creation_is_recorded_with_the_actor_and_the_new_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create_key(
        client,
        tenant.admin_key,
        name="mobile app",
        scopes=["read:sessions", "read:billing"],
        expiresInDays=30,
        rateLimit={"requests": 10, "perSeconds": 60},
    )

    event = (await events(client, tenant, "KEY_CREATED"))[0]

    assert_by_admin(event, tenant)
    assert event["apiKey"] == {"id": created["apiKey"]["id"], "name": "mobile app"}
    details = event["details"]
    assert details["name"] == "mobile app"
    assert details["hint"] == created["apiKey"]["hint"]
    assert details["scopes"] == ["read:billing", "read:sessions"]
    assert parse_time(details["expiresAt"]) == parse_time(created["apiKey"]["expiresAt"])
    # The same words as GraphQL's RateLimit.
    assert details["rateLimit"] == {"requests": 10, "perSeconds": 60}


async def test_key_created_by_the_operator_has_no_acting_key(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    (event,) = await events(client, tenant, "KEY_CREATED")

    assert event["apiKey"]["id"] == tenant.admin_key_id
    assert event["actor"] == {"id": None, "hint": None}


async def test_revocation_is_recorded_once(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await revoke(client, tenant.admin_key, integration.id)
    await revoke(client, tenant.admin_key, integration.id)  # idempotent: nothing changes

    (event,) = await events(client, tenant, "KEY_REVOKED")

    assert_by_admin(event, tenant)
    assert event["apiKey"]["id"] == integration.id
    assert event["details"] == {"name": "integration", "hint": integration.hint}


async def test_rotation_is_recorded_with_both_hints_and_when_the_old_key_stops(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=6)

    (event,) = await events(client, tenant, "KEY_ROTATED")

    assert_by_admin(event, tenant)
    assert event["apiKey"]["id"] == integration.id
    details = event["details"]
    assert details["previousHint"] == integration.hint
    assert details["newKeyId"] == rotated["apiKey"]["id"]
    assert details["newHint"] == rotated["apiKey"]["hint"]
    assert details["gracePeriodHours"] == 6
    assert parse_time(details["oldKeyStopsAt"]) == parse_time(
        rotated["previousApiKey"]["supersededAt"]
    )


async def test_supersession_is_recorded_for_each_replaced_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    other = await make_key(runtime, tenant, "other")
    await update_policy(client, tenant.admin_key, singleActiveKey=True, supersedeGraceHours=2)

    created = await create_key(client, tenant.admin_key, name="the one")

    recorded = await events(client, tenant, "KEY_SUPERSEDED")
    assert {event["apiKey"]["id"] for event in recorded} == {integration.id, other.id}
    for event in recorded:
        assert_by_admin(event, tenant)
        assert event["details"]["supersededByKeyId"] == created["apiKey"]["id"]
        assert event["details"]["supersededByHint"] == created["apiKey"]["hint"]
        assert event["details"]["reason"] == "singleActiveKey policy"
        assert parse_time(event["details"]["effectiveAt"]) - utcnow() > timedelta(hours=1)


async def test_policy_change_is_recorded_with_what_changed_before_and_after(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await update_policy(client, tenant.admin_key, maxExpiresInDays=90)

    await update_policy(client, tenant.admin_key, maxExpiresInDays=30, singleActiveKey=True)

    latest, first = await events(client, tenant, "POLICY_UPDATED")
    assert_by_admin(latest, tenant)
    assert latest["apiKey"] is None
    assert latest["details"] == {
        "before": {"maxExpiresInDays": 90, "singleActiveKey": False},
        "after": {"maxExpiresInDays": 30, "singleActiveKey": True},
    }
    assert first["details"] == {
        "before": {"maxExpiresInDays": None},
        "after": {"maxExpiresInDays": 90},
    }


async def test_policy_update_that_changes_nothing_is_not_recorded(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)

    await update_policy(client, tenant.admin_key, singleActiveKey=False, supersedeGraceHours=0)

    assert await events(client, tenant, "POLICY_UPDATED") == []
    assert await snapshot(runtime) == before


async def test_audit_log_never_holds_a_secret(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    created = await create_key(client, tenant.admin_key, name="app", idempotencyKey="retry-me")
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=1)
    secrets = [tenant.admin_key, integration.secret, created["secret"], rotated["secret"]]

    served = repr(await audit_log(client, tenant.admin_key, first=100))
    async with runtime.engine.connect() as connection:
        stored = repr((await connection.execute(text("SELECT * FROM audit_events"))).all())

    for secret in secrets:
        # Neither the key nor its random part (a hint shows only its first and last characters).
        for fragment in (secret, secret[7:-4]):
            assert fragment not in served
            assert fragment not in stored
    assert "retry-me" not in served + stored


# --- reading the log ------------------------------------------------------------------------------


async def test_audit_log_is_newest_first(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=1)
    await update_policy(client, tenant.admin_key, requireExpiry=True)

    connection = await audit_log(client, tenant.admin_key)

    actions = [edge["node"]["action"] for edge in connection["edges"]]
    # The admin key and the integration key were created before.
    assert actions == ["POLICY_UPDATED", "KEY_ROTATED", "KEY_CREATED", "KEY_CREATED"]
    times = [parse_time(edge["node"]["occurredAt"]) for edge in connection["edges"]]
    assert times == sorted(times, reverse=True)


async def test_audit_log_pages_through_every_event_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    for number in range(4):
        await make_key(runtime, tenant, f"key {number}")  # 5 events with the admin key's
    everything = await audit_log(client, tenant.admin_key, first=100)

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await audit_log(client, tenant.admin_key, first=2, after=after)
        assert page["totalCount"] == 5
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += [edge["node"]["id"] for edge in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert after == page["edges"][-1]["cursor"]

    assert pages == 3
    assert seen == [edge["node"]["id"] for edge in everything["edges"]]


async def test_audit_log_filters_by_action_and_by_key(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await revoke(client, tenant.admin_key, integration.id)

    about_the_key = await audit_log(client, tenant.admin_key, filter={"apiKeyId": integration.id})
    both = await audit_log(
        client, tenant.admin_key, filter={"apiKeyId": integration.id, "action": "KEY_REVOKED"}
    )

    assert [edge["node"]["action"] for edge in about_the_key["edges"]] == [
        "KEY_REVOKED",
        "KEY_CREATED",
    ]
    assert about_the_key["totalCount"] == 2
    assert [edge["node"]["action"] for edge in both["edges"]] == ["KEY_REVOKED"]
    assert both["totalCount"] == 1


@pytest.mark.parametrize(
    ("variables", "argument"),
    [
        ({"first": 0}, "first"),
        ({"first": 101}, "first"),
        ({"after": "not a cursor"}, "after"),
    ],
    ids=["first 0", "first 101", "bad cursor"],
)
async def test_audit_log_with_a_bad_page_argument_is_a_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, variables: dict[str, Any], argument: str
) -> None:
    result = await gql(client, AUDIT_LOG, variables, key=tenant.admin_key)

    (error,) = result.errors
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": argument}
    assert result.data is None


async def test_audit_log_needs_read_api_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    writer = await make_key(runtime, tenant, "writer", ["write:api_keys"])

    result = await gql(client, AUDIT_LOG, key=writer.secret)

    (error,) = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "read:api_keys"}
    assert result.data is None


async def test_organization_sees_only_its_own_events(
    client: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    integration: IssuedKey,
) -> None:
    await revoke(client, tenant.admin_key, integration.id)
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    theirs = await audit_log(client, other_tenant.admin_key)
    asking_for_ours = await audit_log(
        client, other_tenant.admin_key, filter={"apiKeyId": integration.id}
    )

    assert [edge["node"]["apiKey"]["id"] for edge in theirs["edges"]] == [other_tenant.admin_key_id]
    assert theirs["totalCount"] == 1
    assert asking_for_ours == {
        "totalCount": 0,
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "endCursor": None},
        "edges": [],
    }


# --- refused changes are not recorded -------------------------------------------------------------

RefusedMutation = Callable[[httpx.AsyncClient, Tenant, IssuedKey], Awaitable[dict[str, Any]]]


async def _create_with_an_unknown_scope(
    client: httpx.AsyncClient, tenant: Tenant, _: IssuedKey
) -> dict[str, Any]:
    return await mutate(
        client, CREATE_KEY, "createApiKey", tenant.admin_key, name="x", scopes=["read:all"]
    )


async def _rotate_with_a_bad_grace(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey
) -> dict[str, Any]:
    return await mutate(
        client, ROTATE_KEY, "rotateApiKey", tenant.admin_key, id=key.id, gracePeriodHours=721
    )


async def _revoke_an_unknown_key(
    client: httpx.AsyncClient, tenant: Tenant, _: IssuedKey
) -> dict[str, Any]:
    result = await gql(
        client, REVOKE_KEY, {"id": "key_0000000000000000000000"}, key=tenant.admin_key
    )
    payload: dict[str, Any] = result.data["revokeApiKey"]
    return payload


async def _update_policy_out_of_range(
    client: httpx.AsyncClient, tenant: Tenant, _: IssuedKey
) -> dict[str, Any]:
    return await mutate(
        client, UPDATE_POLICY, "updateKeyPolicy", tenant.admin_key, maxExpiresInDays=0
    )


@pytest.mark.parametrize(
    "refused_mutation",
    [
        _create_with_an_unknown_scope,
        _rotate_with_a_bad_grace,
        _revoke_an_unknown_key,
        _update_policy_out_of_range,
    ],
    ids=["createApiKey", "rotateApiKey", "revokeApiKey", "updateKeyPolicy"],
)
async def test_refused_mutation_writes_no_audit_event(
    client: httpx.AsyncClient,
    tenant: Tenant,
    integration: IssuedKey,
    refused_mutation: RefusedMutation,
) -> None:
    before = await audit_log(client, tenant.admin_key, first=100)

    payload = await refused_mutation(client, tenant, integration)

    assert payload["userErrors"] != []
    assert await audit_log(client, tenant.admin_key, first=100) == before
