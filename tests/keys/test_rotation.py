"""``rotateApiKey``: a new secret with the same name, scopes and limits, shown once; the old
secret keeps working, marked deprecated, for the grace period, then is refused as SUPERSEDED."""

from __future__ import annotations

import asyncio
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
    ROTATE_KEY,
    SURFACES,
    Surface,
    accepted,
    api_key,
    create_key,
    mutate,
    parse_time,
    refusal,
    revoke,
    rotate_key,
    travel,
    update_policy,
)
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot


@pytest.fixture
async def integration(client: httpx.AsyncClient, tenant: Tenant) -> IssuedKey:
    """A key with two scopes, its own rate limit and a 30-day lifetime."""
    created = await create_key(
        client,
        tenant.admin_key,
        name="home assistant",
        scopes=["read:charge_points", "read:sessions"],
        expiresInDays=30,
        rateLimit={"requests": 50, "perSeconds": 60},
    )
    return IssuedKey(created["apiKey"]["id"], created["secret"], created["apiKey"]["hint"])


async def rotation_refused(client: httpx.AsyncClient, key: str, **input: Any) -> dict[str, Any]:
    """rotateApiKey that must fail with exactly one userError; returns it."""
    payload = await mutate(client, ROTATE_KEY, "rotateApiKey", key, **input)
    assert payload["apiKey"] is None
    assert payload["secret"] is None
    assert payload["previousApiKey"] is None
    (error,) = payload["userErrors"]
    return dict(error)


# --- the new key ----------------------------------------------------------------------------------


async def test_rotation_gives_a_new_secret_with_the_same_name_scopes_rate_limit_and_lifetime(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    new = rotated["apiKey"]
    assert new["id"] != integration.id
    assert new["name"] == "home assistant"
    assert new["scopes"] == ["read:charge_points", "read:sessions"]
    assert new["rateLimit"] == {"requests": 50, "perSeconds": 60, "isDefault": False}
    assert new["status"] == "ACTIVE"
    assert abs(parse_time(new["expiresAt"]) - (utcnow() + timedelta(days=30))) < timedelta(
        minutes=1
    )
    assert rotated["secret"] != integration.secret
    assert rotated["secret"].startswith(new["hint"].split("…")[0])
    assert new["hint"] != integration.hint
    body = (await accepted(client, "verify", rotated["secret"])).json()
    assert body["keyId"] == new["id"]
    assert body["deprecated"] is False


async def test_rotation_answer_describes_the_previous_key_and_its_sunset(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    previous = rotated["previousApiKey"]
    assert previous["id"] == integration.id
    assert previous["hint"] == integration.hint
    assert previous["status"] == "ACTIVE"
    assert previous["deprecated"] is True
    assert previous["supersededBy"] == {
        "id": rotated["apiKey"]["id"],
        "hint": rotated["apiKey"]["hint"],
    }
    sunset = parse_time(previous["supersededAt"])
    assert abs(sunset - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)


async def test_rotated_secret_is_shown_only_once_and_never_stored(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id)

    asked_again = await gql(
        client,
        "query($id: ID!) { apiKey(id: $id) { secret } }",
        {"id": rotated["apiKey"]["id"]},
        key=tenant.admin_key,
    )
    assert asked_again.error_codes == ["BAD_USER_INPUT"]
    assert "secret" in asked_again.errors[0]["message"]
    stored = await snapshot(runtime)
    assert rotated["secret"] not in repr(stored)


async def test_new_key_holds_the_name_so_another_key_cannot_take_it(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    payload = await mutate(
        client,
        CREATE_KEY,
        "createApiKey",
        tenant.admin_key,
        name="home assistant",
        scopes=["read:charge_points"],
    )
    assert [e["code"] for e in payload["userErrors"]] == ["NAME_TAKEN"]


# --- the old key during and after the grace period ------------------------------------------------


async def test_old_key_works_during_the_grace_period_and_verify_says_it_is_deprecated(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    body = (await accepted(client, "verify", integration.secret)).json()

    assert body["keyId"] == integration.id
    assert body["deprecated"] is True
    assert parse_time(body["sunset"]) == parse_time(rotated["previousApiKey"]["supersededAt"])
    assert body["replacedBy"] == {"name": "home assistant", "hint": rotated["apiKey"]["hint"]}


@pytest.mark.parametrize("surface", ["forward-auth", "graphql"])
async def test_old_key_during_the_grace_period_carries_deprecation_and_sunset_headers(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    surface: Surface,
) -> None:
    old = await make_key(runtime, tenant, "gateway", ["read:api_keys"])
    rotated = await rotate_key(client, tenant.admin_key, id=old.id, gracePeriodHours=24)

    response = await accepted(client, surface, old.secret)

    # RFC 9745: deprecated since the rotation (@ Unix time); RFC 8594: stops at the sunset.
    assert response.headers["Deprecation"].startswith("@")
    assert abs(int(response.headers["Deprecation"][1:]) - utcnow().timestamp()) < 60
    sunset = parse_time(rotated["previousApiKey"]["supersededAt"])
    assert response.headers["Sunset"] == sunset.strftime("%a, %d %b %Y %H:%M:%S GMT")


@pytest.mark.parametrize("surface", SURFACES)
async def test_new_key_carries_no_deprecation(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey, surface: Surface
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    response = await accepted(client, surface, rotated["secret"])

    assert "Deprecation" not in response.headers
    assert "Sunset" not in response.headers


@pytest.mark.parametrize("surface", SURFACES)
async def test_old_key_is_refused_as_superseded_once_the_grace_period_ends(
    client: httpx.AsyncClient,
    tenant: Tenant,
    integration: IssuedKey,
    surface: Surface,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=2)
    await accepted(client, surface, integration.secret)  # cached as valid

    travel(monkeypatch, timedelta(hours=2, minutes=1))

    reason, message = await refusal(client, surface, integration.secret)
    assert reason == "SUPERSEDED"
    assert f"key 'home assistant' ({rotated['apiKey']['hint']})" in message
    sunset = parse_time(rotated["previousApiKey"]["supersededAt"])
    assert sunset.strftime("%Y-%m-%dT%H:%M:%SZ") in message
    await accepted(client, surface, rotated["secret"])
    assert (await api_key(client, tenant.admin_key, integration.id))["status"] == "SUPERSEDED"


async def test_grace_period_zero_stops_the_old_key_at_once(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await accepted(client, "verify", integration.secret)  # cached as valid

    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=0)

    assert rotated["previousApiKey"]["status"] == "SUPERSEDED"
    assert rotated["previousApiKey"]["deprecated"] is False
    assert (await refusal(client, "verify", integration.secret))[0] == "SUPERSEDED"


async def test_grace_period_defaults_to_zero(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    await rotate_key(client, tenant.admin_key, id=integration.id)

    assert (await refusal(client, "verify", integration.secret))[0] == "SUPERSEDED"


async def test_grace_period_of_720_hours_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=720)

    sunset = parse_time(rotated["previousApiKey"]["supersededAt"])
    assert abs(sunset - (utcnow() + timedelta(hours=720))) < timedelta(minutes=1)


async def test_dashboard_sees_whether_the_old_key_is_still_used(
    client: httpx.AsyncClient, tenant: Tenant, integration: IssuedKey
) -> None:
    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)
    assert (await api_key(client, tenant.admin_key, integration.id))["lastUsedAt"] is None

    await accepted(client, "verify", integration.secret)

    previous = await api_key(client, tenant.admin_key, integration.id)
    assert previous["deprecated"] is True
    assert abs(parse_time(previous["lastUsedAt"]) - utcnow()) < timedelta(minutes=1)
    assert (await api_key(client, tenant.admin_key, rotated["apiKey"]["id"]))["lastUsedAt"] is None


async def test_key_can_rotate_itself_and_its_old_secret_stops_at_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    manager = await make_key(runtime, tenant, "ci", ["read:api_keys", "write:api_keys"])

    rotated = await rotate_key(client, manager.secret, id=manager.id)

    assert rotated["apiKey"]["scopes"] == ["read:api_keys", "write:api_keys"]
    assert (await refusal(client, "graphql", manager.secret))[0] == "SUPERSEDED"
    await accepted(client, "graphql", rotated["secret"])


# --- rotation and the organization's policy -------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "days"),
    [({"maxExpiresInDays": 7}, 7), ({"requireExpiry": True}, 90)],
    ids=["bounded by maxExpiresInDays", "requireExpiry without a bound: 90 days"],
)
async def test_rotating_a_key_that_never_expires_gives_a_key_within_the_policy(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    policy: dict[str, Any],
    days: int,
) -> None:
    forever = await make_key(runtime, tenant, "forever")
    await update_policy(client, tenant.admin_key, **policy)

    rotated = await rotate_key(client, tenant.admin_key, id=forever.id)

    expires_at = parse_time(rotated["apiKey"]["expiresAt"])
    assert abs(expires_at - (utcnow() + timedelta(days=days))) < timedelta(minutes=1)


async def test_rotation_under_single_active_key_supersedes_the_other_keys_but_not_the_rotated_one(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    bystander = await make_key(runtime, tenant, "bystander")
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    rotated = await rotate_key(client, tenant.admin_key, id=integration.id, gracePeriodHours=24)

    assert (await refusal(client, "verify", bystander.secret))[0] == "SUPERSEDED"
    assert (await accepted(client, "verify", integration.secret)).json()["deprecated"] is True
    await accepted(client, "verify", rotated["secret"])
    await accepted(client, "graphql", tenant.admin_key)


# --- refused rotations ----------------------------------------------------------------------------


@pytest.mark.parametrize("hours", [-1, 721, 100_000])
async def test_grace_period_out_of_range_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    integration: IssuedKey,
    hours: int,
) -> None:
    before = await snapshot(runtime)

    error = await rotation_refused(
        client, tenant.admin_key, id=integration.id, gracePeriodHours=hours
    )

    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "gracePeriodHours"
    assert f"between 0 and 720, got {hours}" in error["message"]
    assert await snapshot(runtime) == before
    await accepted(client, "verify", integration.secret)


# Each takes the 30-day integration key out of play: (client, tenant, key, monkeypatch).
MakeUnrotatable = Callable[
    [httpx.AsyncClient, Tenant, IssuedKey, pytest.MonkeyPatch], Awaitable[None]
]


async def _revoke(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey, _: pytest.MonkeyPatch
) -> None:
    await revoke(client, tenant.admin_key, key.id)


async def _let_expire(
    _client: httpx.AsyncClient, _tenant: Tenant, _key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    travel(monkeypatch, timedelta(days=31))


async def _rotate_now(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey, _: pytest.MonkeyPatch
) -> None:
    await rotate_key(client, tenant.admin_key, id=key.id, gracePeriodHours=0)


async def _rotate_with_grace(
    client: httpx.AsyncClient, tenant: Tenant, key: IssuedKey, _: pytest.MonkeyPatch
) -> None:
    await rotate_key(client, tenant.admin_key, id=key.id, gracePeriodHours=24)


@pytest.mark.parametrize(
    ("make_unrotatable", "explanation"),
    [
        (_revoke, "is revoked and cannot be rotated"),
        (_let_expire, "is expired and cannot be rotated"),
        (_rotate_now, "is superseded and cannot be rotated"),
        (_rotate_with_grace, "was already rotated and stops working at"),
    ],
    ids=["revoked", "expired", "superseded", "already rotated, in its grace period"],
)
async def test_rotating_a_key_that_is_not_active_is_invalid_input_saying_why(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    integration: IssuedKey,
    monkeypatch: pytest.MonkeyPatch,
    make_unrotatable: MakeUnrotatable,
    explanation: str,
) -> None:
    await make_unrotatable(client, tenant, integration, monkeypatch)
    before = await snapshot(runtime)

    error = await rotation_refused(client, tenant.admin_key, id=integration.id, gracePeriodHours=1)

    assert error["code"] == "INVALID_INPUT"
    assert error["field"] == "id"
    assert f"Key 'home assistant' ({integration.hint}) {explanation}" in error["message"]
    assert await snapshot(runtime) == before


async def test_two_rotations_of_one_key_at_once_make_one_new_key_and_refuse_the_other(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    answers = await asyncio.gather(
        *[
            mutate(client, ROTATE_KEY, "rotateApiKey", tenant.admin_key, id=integration.id)
            for _ in range(2)
        ]
    )

    (rotated,) = [answer for answer in answers if answer["apiKey"] is not None]
    (refused,) = [answer for answer in answers if answer["apiKey"] is None]
    assert [(e["code"], e["field"]) for e in refused["userErrors"]] == [("INVALID_INPUT", "id")]
    assert f"Key 'home assistant' ({integration.hint})" in refused["userErrors"][0]["message"]
    async with runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT id, superseded_by_key_id FROM api_keys WHERE name = 'home assistant'")
            )
        ).all()
    new_id = rotated["apiKey"]["id"]
    assert {tuple(row) for row in rows} == {(integration.id, new_id), (new_id, None)}


@pytest.mark.parametrize(
    "target",
    ["another organization's key", "key_0000000000000000000000", "not an id", ""],
)
async def test_rotating_a_key_the_caller_cannot_see_is_not_found(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    target: str,
) -> None:
    key_id = other_tenant.admin_key_id if target == "another organization's key" else target
    before = await snapshot(runtime)

    error = await rotation_refused(client, tenant.admin_key, id=key_id)

    assert error == {
        "code": "NOT_FOUND",
        "field": "id",
        "message": f"No API key with id '{key_id}'.",
    }
    assert await snapshot(runtime) == before
    await accepted(client, "graphql", other_tenant.admin_key)


async def test_rotation_needs_write_api_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:api_keys"])
    before = await snapshot(runtime)

    result = await gql(client, ROTATE_KEY, {"input": {"id": integration.id}}, key=reader.secret)

    (error,) = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "write:api_keys"}
    assert result.data is None
    assert await snapshot(runtime) == before


async def test_rotating_a_key_with_scopes_the_caller_lacks_is_forbidden(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, integration: IssuedKey
) -> None:
    manager = await make_key(runtime, tenant, "manager", ["write:api_keys", "read:charge_points"])
    before = await snapshot(runtime)

    error = await rotation_refused(client, manager.secret, id=integration.id)

    assert error["code"] == "FORBIDDEN"
    assert error["field"] == "id"
    assert "every scope of this key" in error["message"]
    # A weaker key learns nothing of the key's scopes.
    assert "read:sessions" not in error["message"]
    assert await snapshot(runtime) == before
