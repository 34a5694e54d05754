"""An organization of many keys: what the dashboard counts is bounded, and each count and filter
runs only when it is asked for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from hashlib import sha256

import httpx

from app.keys.repository import SUPERSEDED_LISTED, add_key
from app.kit.db import session_scope
from app.kit.ids import new_id
from app.kit.pagination import COUNT_LIMIT
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.support import Tenant, count_statements, gql


async def add_keys(
    runtime: Runtime, tenant: Tenant, count: int, *, revoked_at: datetime | None = None
) -> None:
    """``count`` keys written directly (no secret: they only need to be listed and counted)."""
    now = datetime.now(UTC)
    batch = new_id("key")
    async with session_scope(runtime.sessionmaker) as session:
        for number in range(count):
            key = ApiKey(
                organization_id=tenant.organization_id,
                name=f"bulk {batch} {number}",
                name_key=f"bulk {batch.lower()} {number}",
                scopes_text="read:billing",
                key_hash=sha256(f"{batch} {number}".encode()).hexdigest(),
                hint="kh_bulk…0000",
                created_at=now - timedelta(seconds=number + 1),
                revoked_at=revoked_at,
            )
            add_key(session, key)


async def test_counts_stop_at_the_limit(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await add_keys(runtime, tenant, COUNT_LIMIT + 5)  # with the admin key: COUNT_LIMIT + 6
    await add_keys(runtime, tenant, 3, revoked_at=datetime.now(UTC))
    query = """{
      apiKeys(first: 1) { totalCount }
      revoked: apiKeys(first: 1, filter: {status: REVOKED}) { totalCount }
      organization { keyCounts { total active revoked expired superseded } }
    }"""

    answer = await gql(client, query, key=tenant.admin_key)

    assert answer.errors == []
    assert answer.data["apiKeys"]["totalCount"] == COUNT_LIMIT
    assert answer.data["revoked"]["totalCount"] == 3
    assert answer.data["organization"]["keyCounts"] == {
        "total": COUNT_LIMIT,
        "active": COUNT_LIMIT,
        "revoked": 3,
        "expired": 0,
        "superseded": 0,
    }


async def test_a_page_without_total_count_counts_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await gql(client, "{ organization { id } }", key=tenant.admin_key)  # the admin key is cached

    with count_statements(runtime.engine) as log:
        answer = await gql(client, "{ apiKeys(first: 5) { nodes { id } } }", key=tenant.admin_key)

    assert answer.errors == []
    assert len(log.statements) == 1
    assert "count(" not in log.statements[0].lower()


async def test_the_scope_filter_reads_a_row_per_scope(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await add_keys(runtime, tenant, 3)  # read:billing only
    query = "query($scope: String) { apiKeys(filter: {scope: $scope}) { totalCount nodes { id } } }"

    with count_statements(runtime.engine) as log:
        billing = await gql(client, query, {"scope": "read:billing"}, key=tenant.admin_key)
    webhooks = await gql(client, query, {"scope": "write:webhooks"}, key=tenant.admin_key)

    assert billing.data["apiKeys"]["totalCount"] == 4  # with the admin key
    assert len(billing.data["apiKeys"]["nodes"]) == 4
    assert webhooks.data["apiKeys"]["nodes"] == [{"id": tenant.admin_key_id}]
    # The page's one statement carries its count, both read through the scope rows.
    page = log.statements[-1]
    assert "count(" in page
    assert page.count("api_key_scopes") >= 2


async def test_superseding_many_keys_is_a_few_statements_and_audits_each(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    many = SUPERSEDED_LISTED + 20
    await add_keys(runtime, tenant, many)
    policy = "mutation { updateKeyPolicy(input: {singleActiveKey: true}) { keysToSupersede } }"
    assert (await gql(client, policy, key=tenant.admin_key)).data["updateKeyPolicy"] == {
        "keysToSupersede": many
    }
    create = """mutation { createApiKey(input: {name: "the one", scopes: ["read:billing"]}) {
      supersededApiKeys { id supersededAt } userErrors { code } } }"""

    with count_statements(runtime.engine) as log:
        created = await gql(client, create, key=tenant.admin_key)

    listed = created.data["createApiKey"]["supersededApiKeys"]
    assert len(listed) == SUPERSEDED_LISTED
    assert len(log.statements) < 20, log.statements
    audit = """{ auditLog(first: 1, filter: {action: KEY_SUPERSEDED}) { totalCount
      nodes { id details } } }"""
    events = (await gql(client, audit, key=tenant.admin_key)).data["auditLog"]
    assert events["totalCount"] == many
    assert events["nodes"][0]["id"].startswith("evt_")
    assert events["nodes"][0]["details"]["reason"] == "singleActiveKey policy"
