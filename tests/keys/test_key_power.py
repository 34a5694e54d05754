"""A key never gets more through a side door: managing a key needs at least its power, a replay
answers only a caller who could have made the request, and usage figures do not reveal key
details to a caller who may not read keys."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from app.kit.timeutil import utcnow
from app.runtime import Runtime
from tests.lifecycle_support import (
    CREATE_KEY,
    REVOKE_KEY,
    ROTATE_KEY,
    create_key,
    mutate,
    rotate_key,
)
from tests.support import IssuedKey, Tenant, gql, make_key, snapshot

FOUR_SCOPES = ["read:billing", "write:billing", "read:charge_points", "write:api_keys"]
MANAGER_SCOPES = ["write:api_keys", "read:charge_points"]


@pytest.fixture
async def manager(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    """A key that may manage keys, but holds fewer scopes than the admin key."""
    return await make_key(runtime, tenant, "manager", MANAGER_SCOPES)


@pytest.fixture
async def billing(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "billing", ["read:billing", "read:charge_points"])


def _forbidden(payload: dict[str, Any]) -> dict[str, Any]:
    (error,) = payload["userErrors"]
    assert error["code"] == "FORBIDDEN"
    assert payload["apiKey"] is None
    return dict(error)


async def _revoke(client: httpx.AsyncClient, key: str, key_id: str) -> dict[str, Any]:
    result = await gql(client, REVOKE_KEY, {"id": key_id}, key=key)
    assert result.errors == []
    payload: dict[str, Any] = result.data["revokeApiKey"]
    return payload


# --- Idempotency replays -----------------------------------------------------------------------


async def test_a_weaker_key_replaying_a_creation_gets_no_key_and_no_secret(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, manager: IssuedKey
) -> None:
    request = {"name": "deploy-bot", "scopes": FOUR_SCOPES, "idempotencyKey": "deploy-2026-12-01"}
    first = await mutate(client, CREATE_KEY, "createApiKey", tenant.admin_key, **request)
    assert first["secret"]
    before = await snapshot(runtime)

    replayed = await mutate(client, CREATE_KEY, "createApiKey", manager.secret, **request)

    _forbidden(replayed)
    assert replayed["secret"] is None
    assert await snapshot(runtime) == before


async def test_a_key_of_other_power_sending_the_same_request_is_not_answered_from_the_record(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, manager: IssuedKey
) -> None:
    # The manager may create this key itself, but the first request came from the admin key:
    # the record binds the request to the scopes of the key that sent it.
    request = {"name": "reader", "scopes": ["read:charge_points"], "idempotencyKey": "r-1"}
    first = await mutate(client, CREATE_KEY, "createApiKey", tenant.admin_key, **request)
    assert first["secret"]

    replayed = await mutate(client, CREATE_KEY, "createApiKey", manager.secret, **request)

    (error,) = replayed["userErrors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", "idempotencyKey")
    assert replayed["secret"] is None


async def test_a_weaker_key_replaying_a_rotation_gets_no_secret(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    manager: IssuedKey,
    billing: IssuedKey,
) -> None:
    request = {"id": billing.id, "gracePeriodHours": 1, "idempotencyKey": "rotate-billing"}
    first = await mutate(client, ROTATE_KEY, "rotateApiKey", tenant.admin_key, **request)
    assert first["secret"]
    before = await snapshot(runtime)

    replayed = await mutate(client, ROTATE_KEY, "rotateApiKey", manager.secret, **request)

    _forbidden(replayed)
    assert replayed["secret"] is None
    assert await snapshot(runtime) == before


# --- Managing a key needs its power --------------------------------------------------------------


async def test_revoking_a_key_holding_a_scope_the_caller_lacks_is_forbidden(
    client: httpx.AsyncClient, runtime: Runtime, manager: IssuedKey, billing: IssuedKey
) -> None:
    before = await snapshot(runtime)

    payload = await _revoke(client, manager.secret, billing.id)

    error = _forbidden(payload)
    assert error["field"] == "id"
    assert "read:billing" not in error["message"]
    assert await snapshot(runtime) == before


async def test_a_key_may_revoke_a_key_whose_scopes_it_holds(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, manager: IssuedKey
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:charge_points"])

    payload = await _revoke(client, manager.secret, reader.id)

    assert payload["userErrors"] == []
    assert payload["apiKey"]["status"] == "REVOKED"


async def test_a_key_may_always_revoke_itself(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    # Holds write:api_keys, but not the other scopes of... itself: it holds all of its own.
    leaked = await make_key(runtime, tenant, "leaked", ["write:api_keys", "read:billing"])

    payload = await _revoke(client, leaked.secret, leaked.id)

    assert payload["userErrors"] == []
    assert payload["apiKey"]["status"] == "REVOKED"


@pytest.mark.parametrize("action", ["rotate", "revoke"])
async def test_a_key_in_its_grace_period_cannot_rotate_or_revoke_its_replacement(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, action: str
) -> None:
    old = await make_key(runtime, tenant, "deployer", ["write:api_keys", "read:charge_points"])
    rotated = await rotate_key(client, tenant.admin_key, id=old.id, gracePeriodHours=24)
    replacement = rotated["apiKey"]["id"]
    before = await snapshot(runtime)

    if action == "rotate":
        payload = await mutate(
            client, ROTATE_KEY, "rotateApiKey", old.secret, id=replacement, gracePeriodHours=0
        )
    else:
        payload = await _revoke(client, old.secret, replacement)

    error = _forbidden(payload)
    assert "replaced" in error["message"]
    assert await snapshot(runtime) == before


async def test_a_key_in_its_grace_period_cannot_touch_a_later_replacement_either(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    old = await make_key(runtime, tenant, "deployer", ["write:api_keys", "read:charge_points"])
    first = await rotate_key(client, tenant.admin_key, id=old.id, gracePeriodHours=24)
    second = await rotate_key(
        client, tenant.admin_key, id=first["apiKey"]["id"], gracePeriodHours=24
    )

    payload = await _revoke(client, old.secret, second["apiKey"]["id"])

    _forbidden(payload)


# --- Usage figures do not carry key details ------------------------------------------------------

BY_KEY = """
query($from: DateTime!, $to: DateTime!) {
  usage(from: $from, to: $to, granularity: HOUR) {
    byKey { requests apiKey { name scopes hint status supersededBy { name } } }
  }
}
"""


def _hour(moment: datetime) -> str:
    return moment.replace(minute=0, second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_analytics_key_reads_usage_by_key_but_not_key_details(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    analyst = await make_key(runtime, tenant, "analyst", ["read:analytics"])
    await create_key(client, tenant.admin_key, name="used")  # a use of the admin key
    await runtime.recorder.flush()
    now = utcnow()
    window = {"from": _hour(now - timedelta(hours=1)), "to": _hour(now + timedelta(hours=1))}

    result = await gql(client, BY_KEY, window, key=analyst.secret)

    rows = result.data["usage"]["byKey"]
    assert rows == [{"requests": 1, "apiKey": None}]
    assert result.error_codes == ["FORBIDDEN"]
    assert result.errors[0]["extensions"]["requiredScope"] == "read:api_keys"


async def test_a_key_that_may_read_keys_gets_their_details_in_usage(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await create_key(client, tenant.admin_key, name="used")
    await runtime.recorder.flush()
    now = utcnow()
    window = {"from": _hour(now - timedelta(hours=1)), "to": _hour(now + timedelta(hours=1))}

    result = await gql(client, BY_KEY, window, key=tenant.admin_key)

    assert result.errors == []
    (row,) = result.data["usage"]["byKey"]
    assert row["apiKey"]["name"] == "admin"


async def test_a_key_being_replaced_cannot_replay_its_rotation_to_read_the_new_secret(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    # Another key of the same scopes rotated it; the old key, still working in its grace
    # period, sends the very same request.
    scopes = ["write:api_keys", "read:charge_points"]
    rotator = await make_key(runtime, tenant, "rotator", scopes)
    old = await make_key(runtime, tenant, "deployer", scopes)
    request = {"id": old.id, "gracePeriodHours": 24, "idempotencyKey": "rotate-deployer"}
    first = await mutate(client, ROTATE_KEY, "rotateApiKey", rotator.secret, **request)
    assert first["secret"]
    before = await snapshot(runtime)

    replayed = await mutate(client, ROTATE_KEY, "rotateApiKey", old.secret, **request)

    assert replayed["secret"] is None
    assert replayed["apiKey"] is None
    assert replayed["userErrors"]
    assert await snapshot(runtime) == before


async def test_the_key_that_made_a_request_gets_its_answer_again(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    # A key rotating itself, retried after a timeout: the same new secret.
    own = await make_key(runtime, tenant, "self-rotating", ["write:api_keys"])
    request = {"id": own.id, "gracePeriodHours": 24, "idempotencyKey": "rotate-myself"}
    first = await mutate(client, ROTATE_KEY, "rotateApiKey", own.secret, **request)

    retried = await mutate(client, ROTATE_KEY, "rotateApiKey", own.secret, **request)

    assert retried["secret"] == first["secret"]
