"""The keys queries over GraphQL: ``organization``, ``apiKeys`` (a connection), ``apiKey(id)``
and ``scopes``, as the keys page of a dashboard uses them."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from app.auth.outcomes import Outcome
from app.auth.principal import Caller
from app.keys import revocation as keys_revocation
from app.keys import schemas as keys_schemas
from app.keys import service as keys_service
from app.kit.db import session_scope
from app.kit.errors import UserError
from app.kit.ids import new_id
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, count_statements, gql, make_key

KEYS_PAGE = """
query KeysPage($first: Int, $after: String, $filter: ApiKeyFilter) {
  apiKeys(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id name } }
    nodes { id }
  }
}
"""

API_KEY = """
query ApiKey($id: ID!) {
  apiKey(id: $id) {
    id name scopes hint createdAt lastUsedAt expiresAt revokedAt status
  }
}
"""


# --- helpers --------------------------------------------------------------------------------------


def _admin_caller(runtime: Runtime, tenant: Tenant) -> Caller:
    return Caller(tenant.organization_id, runtime.catalogue.names())


async def _revoke(runtime: Runtime, tenant: Tenant, key: IssuedKey) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await keys_revocation.revoke_key(
            session, _admin_caller(runtime, tenant), key.id, broadcast=runtime.broadcast
        )
    assert not isinstance(revoked, UserError)


async def _expire(runtime: Runtime, key: IssuedKey) -> None:
    """Move the key's expiry into the past (a key created with expiresInDays, days later)."""
    async with session_scope(runtime.sessionmaker) as session:
        row = await session.get(ApiKey, key.id)
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
        session.add(row)


async def _make_keys(runtime: Runtime, tenant: Tenant, count: int) -> list[str]:
    """``count`` keys created one after another in one transaction; their ids, oldest first."""
    ids = []
    async with session_scope(runtime.sessionmaker) as session:
        for number in range(count):
            created = await keys_service.create_key(
                session,
                _admin_caller(runtime, tenant),
                keys_schemas.KeyCreate(name=f"key-{number:03d}", scopes=["read:sessions"]),
                catalogue=runtime.catalogue,
                key_prefix=runtime.settings.key_prefix,
                broadcast=runtime.broadcast,
            )
            assert isinstance(created, keys_schemas.KeyCreated)
            ids.append(created.api_key.id)
    return ids


async def _page(
    client: httpx.AsyncClient,
    key: str,
    *,
    first: int | None = None,
    after: str | None = None,
    filter: dict[str, Any] | None = None,
) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    if first is not None:
        variables["first"] = first
    if after is not None:
        variables["after"] = after
    if filter is not None:
        variables["filter"] = filter
    result = await gql(client, KEYS_PAGE, variables, key=key)
    assert result.errors == [], result.body
    page: dict[str, Any] = result.data["apiKeys"]
    return page


def _names(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["name"] for edge in page["edges"]]


def _assert_bad_user_input(result: Any, argument: str) -> None:
    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert f"'{argument}'" in result.errors[0]["message"]


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


# --- organization and scopes ----------------------------------------------------------------------


async def test_organization_is_the_callers_own_with_its_key_counts_by_status(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    await make_key(runtime, tenant, "active")
    await _revoke(runtime, tenant, await make_key(runtime, tenant, "revoked"))
    await _expire(runtime, await make_key(runtime, tenant, "expired", expires_in_days=1))
    await make_key(runtime, other_tenant, "globex only")
    query = "{ organization { id name createdAt keyCounts { total active revoked expired } } }"

    result = await gql(client, query, key=tenant.admin_key)

    assert result.errors == []
    organization = result.data["organization"]
    assert organization["id"] == tenant.organization_id
    assert organization["name"] == "Acme"
    assert datetime.fromisoformat(organization["createdAt"]) <= datetime.now(UTC)
    assert organization["keyCounts"] == {"total": 4, "active": 2, "revoked": 1, "expired": 1}


async def test_scopes_lists_the_catalogue_each_with_a_description(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    result = await gql(client, "{ scopes { name description } }", key=tenant.admin_key)

    assert result.errors == []
    scopes = result.data["scopes"]
    assert {scope["name"] for scope in scopes} == {
        "read:charge_points",
        "write:charge_points",
        "read:billing",
        "write:billing",
        "read:analytics",
        "write:webhooks",
        "read:sessions",
        "read:api_keys",
        "write:api_keys",
    }
    assert all(scope["description"].strip() for scope in scopes)


# --- one key --------------------------------------------------------------------------------------


async def test_api_key_shows_the_keys_fields(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(
        runtime, tenant, "billing sync", ["write:billing", "read:billing"], expires_in_days=30
    )

    result = await gql(client, API_KEY, {"id": key.id}, key=tenant.admin_key)

    assert result.errors == []
    shown = result.data["apiKey"]
    created_at = datetime.fromisoformat(shown.pop("createdAt"))
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)
    assert datetime.fromisoformat(shown.pop("expiresAt")) == created_at + timedelta(days=30)
    assert shown == {
        "id": key.id,
        "name": "billing sync",
        "scopes": ["read:billing", "write:billing"],
        "hint": key.hint,
        "lastUsedAt": None,
        "revokedAt": None,
        "status": "ACTIVE",
    }
    assert re.fullmatch(r"kh_[0-9A-Za-z]{4}…[0-9A-Za-z]{4}", key.hint)
    assert key.hint.startswith(key.secret[:7])
    assert key.hint.endswith(key.secret[-4:])


@pytest.mark.parametrize("which", ["unknown", "malformed", "another organization's"])
async def test_api_key_is_null_for_an_id_that_is_not_one_of_the_callers_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant, which: str
) -> None:
    ids = {
        "unknown": new_id("key"),
        "malformed": "key_' OR '1'='1",
        "another organization's": (await make_key(runtime, other_tenant, "globex")).id,
    }

    result = await gql(client, API_KEY, {"id": ids[which]}, key=tenant.admin_key)

    assert result.errors == []
    assert result.data == {"apiKey": None}


# --- the connection: order and pages --------------------------------------------------------------


async def test_keys_are_listed_newest_first(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    for name in ("first", "second", "third"):
        await make_key(runtime, tenant, name)

    page = await _page(client, tenant.admin_key)

    assert _names(page) == ["third", "second", "first", "admin"]
    assert [node["id"] for node in page["nodes"]] == [e["node"]["id"] for e in page["edges"]]


async def test_a_page_holds_20_keys_unless_first_says_otherwise(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await _make_keys(runtime, tenant, 24)

    page = await _page(client, tenant.admin_key)

    assert len(page["edges"]) == 20
    assert page["totalCount"] == 25
    assert page["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize("first", [1, 100])
async def test_first_of_1_to_100_is_accepted(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, first: int
) -> None:
    await _make_keys(runtime, tenant, 2)

    page = await _page(client, tenant.admin_key, first=first)

    assert len(page["edges"]) == min(first, 3)


async def test_after_cursors_page_through_every_key_exactly_once(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    ids = await _make_keys(runtime, tenant, 7)
    newest_first = [*reversed(ids), tenant.admin_key_id]

    seen: list[str] = []
    pages = []
    after = None
    while True:
        page = await _page(client, tenant.admin_key, first=3, after=after)
        pages.append(page["pageInfo"])
        seen += [edge["node"]["id"] for edge in page["edges"]]
        assert page["totalCount"] == 8
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert seen == newest_first
    assert [p["hasPreviousPage"] for p in pages] == [False, True, True]
    assert [p["hasNextPage"] for p in pages] == [True, True, False]
    # Past the last key: an empty page that still counts the whole list.
    beyond = await _page(client, tenant.admin_key, first=3, after=pages[-1]["endCursor"])
    assert (beyond["edges"], beyond["totalCount"]) == ([], 8)
    assert beyond["pageInfo"]["hasNextPage"] is False


async def test_keys_created_at_the_same_instant_are_paged_without_gaps_or_repeats(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await _make_keys(runtime, tenant, 5)
    instant = datetime(2030, 1, 1, tzinfo=UTC)
    async with session_scope(runtime.sessionmaker) as session:
        for row in (await session.exec(select(ApiKey))).all():
            row.created_at = instant
            session.add(row)

    everything = _names(await _page(client, tenant.admin_key))
    paged: list[str] = []
    after = None
    for _ in range(3):
        page = await _page(client, tenant.admin_key, first=2, after=after)
        paged += _names(page)
        after = page["pageInfo"]["endCursor"]

    assert sorted(paged) == sorted(everything)
    assert paged == everything  # the same order every time


# --- the connection: bad arguments ----------------------------------------------------------------


@pytest.mark.parametrize("first", [0, -1, 101])
async def test_first_outside_1_to_100_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, first: int
) -> None:
    result = await gql(client, KEYS_PAGE, {"first": first}, key=tenant.admin_key)

    _assert_bad_user_input(result, "first")
    assert "between 1 and 100" in result.errors[0]["message"]


@pytest.mark.parametrize(
    "after",
    [
        pytest.param("not a cursor", id="not base64"),
        pytest.param("", id="empty"),
        pytest.param(_cursor("\xff\xfe"), id="not utf-8 inside"),
        pytest.param(_cursor("yesterday|key_x"), id="no timestamp"),
        pytest.param(_cursor("2030-01-01T00:00:00+00:00|"), id="no id"),
        pytest.param(_cursor("2030-01-01T00:00:00|key_x"), id="no time zone"),
    ],
)
async def test_a_cursor_this_list_did_not_return_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, after: str
) -> None:
    result = await gql(client, KEYS_PAGE, {"after": after}, key=tenant.admin_key)

    _assert_bad_user_input(result, "after")


# --- the connection: filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("ACTIVE", ["active", "admin"]),
        ("REVOKED", ["revoked"]),
        ("EXPIRED", ["expired"]),
        ("ALL", ["expired", "revoked", "active", "admin"]),
        (None, ["expired", "revoked", "active", "admin"]),
    ],
)
async def test_status_filter_keeps_the_keys_of_that_status(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    status: str | None,
    expected: list[str],
) -> None:
    await make_key(runtime, tenant, "active", expires_in_days=30)
    await _revoke(runtime, tenant, await make_key(runtime, tenant, "revoked"))
    await _expire(runtime, await make_key(runtime, tenant, "expired", expires_in_days=1))

    page = await _page(client, tenant.admin_key, filter={"status": status})

    assert _names(page) == expected
    assert page["totalCount"] == len(expected)


async def test_scope_filter_keeps_the_keys_holding_that_scope(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await make_key(runtime, tenant, "reads billing", ["read:billing"])
    await make_key(runtime, tenant, "writes billing", ["write:billing"])
    await make_key(runtime, tenant, "both", ["read:billing", "read:sessions"])
    await _revoke(runtime, tenant, await make_key(runtime, tenant, "gone", ["read:billing"]))

    everything = await _page(client, tenant.admin_key, filter={"scope": "read:billing"})
    active = await _page(
        client, tenant.admin_key, filter={"scope": "read:billing", "status": "ACTIVE"}
    )

    assert _names(everything) == ["gone", "both", "reads billing", "admin"]
    assert everything["totalCount"] == 4
    assert _names(active) == ["both", "reads billing", "admin"]
    # A scope name with LIKE's wildcard character "_" in it matches only itself.
    assert _names(await _page(client, tenant.admin_key, filter={"scope": "read:api_keys"})) == [
        "admin"
    ]


async def test_an_unknown_scope_filter_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    result = await gql(client, KEYS_PAGE, {"filter": {"scope": "read:%"}}, key=tenant.admin_key)

    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert "Unknown scope" in result.errors[0]["message"]


# --- permissions and tenancy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "{ apiKeys { totalCount } }",
        '{ apiKey(id: "key_0000000000000000000000") { id } }',
        "{ organization { keyCounts { total } } }",
    ],
)
async def test_reading_keys_without_read_api_keys_is_forbidden(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, query: str
) -> None:
    key = await make_key(runtime, tenant, "writer", ["write:api_keys", "read:charge_points"])

    result = await gql(client, query, key=key.secret)

    assert result.response.status_code == 200
    assert not any((result.data or {}).values())
    [error] = result.errors
    assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "read:api_keys"}
    assert "read:api_keys" in error["message"]


async def test_a_key_without_read_api_keys_still_sees_its_organization_and_the_scopes(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "plain", ["read:charge_points"])

    result = await gql(client, "{ organization { id } scopes { name } }", key=key.secret)

    assert result.errors == []
    assert result.data["organization"] == {"id": tenant.organization_id}


async def test_an_organization_lists_only_its_own_keys(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    acme = await make_key(runtime, tenant, "shared name")
    globex = await make_key(runtime, other_tenant, "shared name")
    await make_key(runtime, other_tenant, "globex only", ["read:billing"])

    acme_page = await _page(client, tenant.admin_key, first=100, filter={"status": "ALL"})
    globex_page = await _page(client, other_tenant.admin_key, first=100)
    by_scope = await _page(client, tenant.admin_key, filter={"scope": "read:billing"})

    assert [n["id"] for n in acme_page["nodes"]] == [acme.id, tenant.admin_key_id]
    assert acme_page["totalCount"] == 2
    assert globex.id in [n["id"] for n in globex_page["nodes"]]
    assert acme.id not in [n["id"] for n in globex_page["nodes"]]
    assert [n["id"] for n in by_scope["nodes"]] == [tenant.admin_key_id]


async def test_last_used_at_is_the_latest_use_flushed_or_not_on_the_page_and_on_one_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    flushed_then_used, used_before_a_newer_flush, never_used = await _make_keys(runtime, tenant, 3)
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    recorder = runtime.recorder
    for key_id, minutes in ((flushed_then_used, 0), (used_before_a_newer_flush, 30)):
        use = (moment + timedelta(minutes=minutes)).timestamp()
        recorder.record(key_id, tenant.organization_id, "GET /x", Outcome.VALID, use)
    await recorder.flush()
    # Uses this instance has not flushed yet: one newer than the stored value, one older (as when
    # another instance flushed a newer use meanwhile).
    later = (moment + timedelta(minutes=10)).timestamp()
    recorder.record(flushed_then_used, tenant.organization_id, "GET /x", Outcome.VALID, later)
    earlier = (moment + timedelta(minutes=20)).timestamp()
    recorder.record(
        used_before_a_newer_flush, tenant.organization_id, "GET /x", Outcome.VALID, earlier
    )
    expected = {
        flushed_then_used: (moment + timedelta(minutes=10)).isoformat(),
        used_before_a_newer_flush: (moment + timedelta(minutes=30)).isoformat(),
        never_used: None,
    }

    page = await gql(
        client, "{ apiKeys(first: 10) { nodes { id lastUsedAt } } }", key=tenant.admin_key
    )
    one_by_one = {
        key_id: await gql(
            client,
            "query($id: ID!) { apiKey(id: $id) { lastUsedAt } }",
            {"id": key_id},
            key=tenant.admin_key,
        )
        for key_id in expected
    }

    on_the_page = {n["id"]: n["lastUsedAt"] for n in page.data["apiKeys"]["nodes"]}
    assert {key_id: on_the_page[key_id] for key_id in expected} == expected
    assert {k: r.data["apiKey"]["lastUsedAt"] for k, r in one_by_one.items()} == expected


# --- cost -----------------------------------------------------------------------------------------


async def _statements_for_page(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, first: int
) -> Sequence[str]:
    query = "query($first: Int!) { apiKeys(first: $first) { nodes { id lastUsedAt } } }"
    with count_statements(runtime.engine) as log:
        result = await gql(client, query, {"first": first}, key=tenant.admin_key)
    assert result.errors == []
    nodes = result.data["apiKeys"]["nodes"]
    assert len(nodes) == first
    assert all(node["lastUsedAt"] is not None for node in nodes)
    return log.statements


async def test_one_keys_last_used_at_costs_no_statement_of_its_own(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    (key_id,) = await _make_keys(runtime, tenant, 1)
    query = "query($id: ID!) { apiKey(id: $id) { name %s } }"
    await gql(client, "{ organization { id } }", key=tenant.admin_key)  # the admin key is cached

    with count_statements(runtime.engine) as without:
        plain = await gql(client, query % "", {"id": key_id}, key=tenant.admin_key)
    with count_statements(runtime.engine) as selected:
        with_last_used = await gql(
            client, query % "lastUsedAt", {"id": key_id}, key=tenant.admin_key
        )

    assert plain.errors == []
    assert with_last_used.errors == []
    assert with_last_used.data["apiKey"]["lastUsedAt"] is None
    # The key's row carries last_used_at: selecting it reads nothing more.
    assert len(without.statements) == 1, without.statements
    assert selected.statements == without.statements


async def test_a_page_of_100_keys_with_last_used_at_costs_as_many_statements_as_a_page_of_5(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    used = datetime.now(UTC).timestamp()
    for key_id in await _make_keys(runtime, tenant, 100):
        runtime.recorder.record(key_id, tenant.organization_id, "GET /x", Outcome.VALID, used)
    await runtime.recorder.flush()
    await gql(client, "{ organization { id } }", key=tenant.admin_key)  # the admin key is cached

    five = await _statements_for_page(client, runtime, tenant, 5)
    hundred = await _statements_for_page(client, runtime, tenant, 100)

    assert len(hundred) == len(five), (five, hundred)
    # One statement in all: the page carries its total and each key's last_used_at.
    assert len(five) == 1, five
