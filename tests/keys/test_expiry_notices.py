"""Expiry notices: finding the keys that expire soon, and telling their integrations on every
successful verification in the last week (as GitHub does with its token expiry header)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.kit.timeutil import utcnow
from app.runtime import Runtime
from tests.lifecycle_support import (
    SURFACES,
    Surface,
    accepted,
    api_key,
    parse_time,
    revoke,
    travel,
)
from tests.support import IssuedKey, Tenant, gql, make_key

EXPIRING = """
query Expiring($days: Int!) {
  apiKeys(filter: {expiringWithinDays: $days}) {
    totalCount
    nodes { name expiresInDays }
  }
}
"""

EXPIRY_HEADER = "X-Api-Key-Expires-At"


@pytest.fixture
async def keys_by_lifetime(runtime: Runtime, tenant: Tenant) -> dict[str, IssuedKey]:
    """Keys expiring in 3, 7, 10 and 40 days, one that never expires and a revoked one."""
    keys = {
        f"{days} days": await make_key(runtime, tenant, f"{days} days", expires_in_days=days)
        for days in (3, 7, 10, 40)
    }
    keys["never"] = await make_key(runtime, tenant, "never")
    keys["revoked"] = await make_key(runtime, tenant, "revoked", expires_in_days=3)
    return keys


async def expiring_within(client: httpx.AsyncClient, tenant: Tenant, days: int) -> dict[str, Any]:
    result = await gql(client, EXPIRING, {"days": days}, key=tenant.admin_key)
    assert result.errors == [], result.errors
    connection: dict[str, Any] = result.data["apiKeys"]
    return connection


# --- finding the keys that expire soon ------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (0, []),
        (3, ["3 days"]),
        (7, ["7 days", "3 days"]),
        (30, ["10 days", "7 days", "3 days"]),
        (3650, ["40 days", "10 days", "7 days", "3 days"]),
    ],
)
async def test_expiring_within_days_lists_the_active_keys_expiring_by_then(
    client: httpx.AsyncClient,
    tenant: Tenant,
    keys_by_lifetime: dict[str, IssuedKey],
    days: int,
    expected: list[str],
) -> None:
    await revoke(client, tenant.admin_key, keys_by_lifetime["revoked"].id)

    connection = await expiring_within(client, tenant, days)

    assert [node["name"] for node in connection["nodes"]] == expected
    assert connection["totalCount"] == len(expected)


async def test_expired_keys_are_not_listed_as_expiring(
    client: httpx.AsyncClient,
    tenant: Tenant,
    keys_by_lifetime: dict[str, IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    travel(monkeypatch, timedelta(days=8))

    connection = await expiring_within(client, tenant, 7)

    assert [node["name"] for node in connection["nodes"]] == ["10 days"]


@pytest.mark.parametrize("days", [-1, 3651])
async def test_expiring_within_days_out_of_range_is_a_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, days: int
) -> None:
    result = await gql(client, EXPIRING, {"days": days}, key=tenant.admin_key)

    (error,) = result.errors
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == "filter.expiringWithinDays"
    assert f"between 0 and 3650, got {days}" in error["message"]
    assert result.data is None


async def test_expires_in_days_counts_whole_days_left(
    client: httpx.AsyncClient, tenant: Tenant, keys_by_lifetime: dict[str, IssuedKey]
) -> None:
    for name, days in [("3 days", 3), ("40 days", 40), ("never", None)]:
        node = await api_key(client, tenant.admin_key, keys_by_lifetime[name].id)
        assert node["expiresInDays"] == days, name


async def test_expires_in_days_is_zero_once_expired_and_rounds_up_before(
    client: httpx.AsyncClient,
    tenant: Tenant,
    keys_by_lifetime: dict[str, IssuedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    travel(monkeypatch, timedelta(days=6, hours=12))

    nodes = {
        name: await api_key(client, tenant.admin_key, keys_by_lifetime[name].id)
        for name in ("3 days", "7 days")
    }

    assert (nodes["3 days"]["expiresInDays"], nodes["3 days"]["status"]) == (0, "EXPIRED")
    assert (nodes["7 days"]["expiresInDays"], nodes["7 days"]["status"]) == (1, "ACTIVE")


# --- telling the integration ----------------------------------------------------------------------


@pytest.mark.parametrize("days", [1, 7])
async def test_verify_answer_for_a_key_expiring_within_a_week_says_it_expires_soon(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, days: int
) -> None:
    key = await make_key(runtime, tenant, "expiring", expires_in_days=days)

    body = (await accepted(client, "verify", key.secret)).json()

    assert body["expiresSoon"] is True
    assert abs(parse_time(body["expiresAt"]) - (utcnow() + timedelta(days=days))) < timedelta(
        minutes=1
    )


@pytest.mark.parametrize("surface", SURFACES)
async def test_every_successful_use_of_a_key_expiring_within_a_week_says_when(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, surface: Surface
) -> None:
    key = await make_key(runtime, tenant, "expiring", expires_in_days=3)
    expires_at = (await accepted(client, "verify", key.secret)).json()["expiresAt"]

    response = await accepted(client, surface, key.secret)

    assert response.headers[EXPIRY_HEADER] == parse_time(expires_at).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("days", [8, 40, None], ids=["8 days", "40 days", "never"])
async def test_key_expiring_later_carries_no_expiry_notice(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    surface: Surface,
    days: int | None,
) -> None:
    key = await make_key(runtime, tenant, "long-lived", expires_in_days=days)

    response = await accepted(client, surface, key.secret)

    assert EXPIRY_HEADER not in response.headers
    if surface == "verify":
        assert response.json()["expiresSoon"] is False


async def test_cached_key_starts_carrying_the_notice_when_its_last_week_begins(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await make_key(runtime, tenant, "ten days", expires_in_days=10)
    assert (await accepted(client, "verify", key.secret)).json()["expiresSoon"] is False

    travel(monkeypatch, timedelta(days=3, hours=1))

    assert (await accepted(client, "verify", key.secret)).json()["expiresSoon"] is True
    assert EXPIRY_HEADER in (await accepted(client, "forward-auth", key.secret)).headers


async def test_refused_key_carries_no_expiry_notice(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "expiring", ["read:charge_points"], expires_in_days=3)

    response = await client.get(
        "/v1/auth", headers={"X-API-Key": key.secret, "X-Required-Scopes": "write:billing"}
    )

    assert response.status_code == 403
    assert EXPIRY_HEADER not in response.headers
