"""On PostgreSQL, with an organization of realistic size, every statement of the dashboard's key
queries reads through an index: none scans the keys table (or the scope rows) from end to end."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from app.keys.policy import SUPERSEDED_PER_BATCH
from app.keys.supersession import mark_next_batch
from app.runtime import Runtime
from tests.support import Tenant, gql, make_key

KEYS = 50_000

# A quarter hold read:billing, a third expire (half of those already have), one in twenty is
# revoked, one in fifty superseded: as in benchmarks/scale.py.
_KEYS = """
INSERT INTO api_keys (id, organization_id, name, name_key, scopes_text, key_hash, hint,
                      created_at, expires_at, revoked_at, superseded_at)
SELECT 'key_' || lpad(i::text, 22, '0'), :org, 'plan ' || i, 'plan ' || i,
       CASE WHEN i % 4 = 2 THEN 'read:billing' ELSE 'read:charge_points' END,
       md5('plan ' || i) || md5('plan ' || i), 'kh_plan…0000',
       now() AT TIME ZONE 'UTC' - make_interval(mins => i),
       CASE WHEN i % 3 = 0
            THEN now() AT TIME ZONE 'UTC' + make_interval(days => (i * 7919) % 730 - 365) END,
       CASE WHEN i % 20 = 1 THEN now() AT TIME ZONE 'UTC' END,
       CASE WHEN i % 50 = 3 THEN now() AT TIME ZONE 'UTC' END
FROM generate_series(1, :count) AS i
"""
_SCOPES = """
INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)
SELECT id, scopes_text, organization_id, created_at FROM api_keys WHERE id LIKE 'key_0%'
"""

FILTERED = "query($f: ApiKeyFilter) { apiKeys(first: 50, filter: $f) { totalCount nodes { id } } }"
DASHBOARD = [
    ("{ apiKeys(first: 50) { totalCount pageInfo { endCursor } nodes { id } } }", {}),
    *(
        (FILTERED, {"f": key_filter})
        for key_filter in (
            {"status": "ACTIVE"},
            {"status": "REVOKED"},
            {"status": "EXPIRED"},
            {"status": "SUPERSEDED"},
            {"scope": "read:billing"},
            {"status": "ACTIVE", "scope": "read:billing"},
            {"expiringWithinDays": 7},
        )
    ),
    ("{ organization { keyCounts { total active revoked expired superseded } } }", {}),
]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_dashboards_key_queries_never_scan_the_keys_table(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    async with runtime.engine.begin() as connection:
        await connection.execute(text(_KEYS), {"org": tenant.organization_id, "count": KEYS})
        await connection.execute(text(_SCOPES))
        await connection.execute(text("ANALYZE api_keys, api_key_scopes"))
    await gql(client, "{ organization { id } }", key=tenant.admin_key)  # the admin key is cached
    statements: list[tuple[str, Any, dict[str, Any]]] = []
    asking: dict[str, Any] = {}

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "api_key" in statement:
            statements.append((statement, parameters, asking))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        for query, variables in DASHBOARD:
            asking = variables
            answer = await gql(client, query, variables, key=tenant.admin_key)
            assert answer.errors == [], answer.body
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)

    assert len(statements) >= len(DASHBOARD)
    scanning = []
    async with runtime.engine.connect() as connection:
        for statement, parameters, asked in statements:
            plan = (await connection.exec_driver_sql("EXPLAIN " + statement, parameters)).all()
            text_plan = "\n".join(row[0] for row in plan)
            if "Seq Scan on api_key" in text_plan or _reads_expired_keys(asked, text_plan):
                scanning.append(f"{statement}\n{parameters}\n{text_plan}")
    assert scanning == [], "\n\n".join(scanning)


def _reads_expired_keys(asked: dict[str, Any], plan: str) -> bool:
    """Whether the expiring filter walks the expiry index from the organization's first expired
    key (a sixth of its keys here) rather than from now: its range must be bounded on both ends."""
    if "expiringWithinDays" not in asked.get("f", {}):
        return False
    return any(
        "Index Cond" in line and "expires_at <=" in line and "expires_at >" not in line
        for line in plan.splitlines()
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_each_supersession_batch_starts_where_the_previous_one_stopped(
    runtime: Runtime, tenant: Tenant
) -> None:
    async with runtime.engine.begin() as connection:
        await connection.execute(text(_KEYS), {"org": tenant.organization_id, "count": KEYS})
        await connection.execute(
            text("UPDATE organizations SET single_active_key = true WHERE id = :id"),
            {"id": tenant.organization_id},
        )
        await connection.execute(text("ANALYZE api_keys"))
    await make_key(runtime, tenant, "the one")  # marks the first batch, leaves the rest
    for _ in range(BATCHES_BEFORE):
        assert await mark_next_batch(runtime.sessionmaker)
    batches: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "ORDER BY" in statement:
            batches.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await mark_next_batch(runtime.sessionmaker)
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", record)

    (statement, parameters) = next((s, p) for s, p in batches if "api_keys.created_at" in s)
    async with runtime.engine.connect() as connection:
        plan = await connection.exec_driver_sql("EXPLAIN ANALYZE " + statement, parameters)
        text_plan = "\n".join(row[0] for row in plan.all())
    removed = sum(
        int(line.split(":")[1]) for line in text_plan.splitlines() if "Rows Removed by" in line
    )
    # Explained after it ran, it passes over its own batch (marked since) and the keys of its
    # stretch that were not active (revoked, expired: about a third), never the batches before
    # it (ten of them here).
    assert removed < 2 * SUPERSEDED_PER_BATCH, text_plan


BATCHES_BEFORE = 10
