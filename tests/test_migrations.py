"""The Alembic migrations build exactly the schema the models describe, on both databases, and
can be undone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from app.kit.db import create_engine
from app.migrate import alembic_config, upgrade_to_head
from app.models import metadata


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_database_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)  # already at head: applying again changes nothing
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []


async def test_migrations_downgrade_to_empty_and_upgrade_again(database_url: str) -> None:
    # The database is this test run's own (see conftest), and it is left at head again.
    engine = create_engine(database_url)

    def downgrade(connection: Connection) -> list[str]:
        command.downgrade(alembic_config(connection), "base")
        return sorted(inspect(connection).get_table_names())

    try:
        async with engine.begin() as connection:
            remaining = await connection.run_sync(downgrade)
        assert remaining == ["alembic_version"]
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_0008_carries_each_keys_scopes_over_to_a_row_each(database_url: str) -> None:
    engine = create_engine(database_url)
    created = datetime(2026, 11, 1, 12, 0)
    keys = [
        ("key_" + "a" * 22, "read:billing read:charge_points"),
        ("key_" + "b" * 22, "write:webhooks"),
    ]

    def to_0007_with_keys(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0007")
        connection.execute(
            text("INSERT INTO organizations (id, name, created_at) VALUES ('org_m', 'M', :at)"),
            {"at": created},
        )
        for number, (key_id, scopes) in enumerate(keys):
            connection.execute(
                text(
                    "INSERT INTO api_keys (id, organization_id, name, name_key, scopes_text,"
                    " key_hash, hint, created_at) VALUES (:id, 'org_m', :name, :name, :scopes,"
                    " :hash, 'kh_…', :at)"
                ),
                {
                    "id": key_id,
                    "name": f"k{number}",
                    "scopes": scopes,
                    "hash": key_id,
                    "at": created,
                },
            )

    def scope_rows(connection: Connection) -> list[tuple[Any, ...]]:
        rows = connection.execute(
            text(
                "SELECT s.api_key_id, s.scope, s.organization_id, s.created_at = k.created_at"
                " FROM api_key_scopes s JOIN api_keys k ON k.id = s.api_key_id"
                " WHERE s.organization_id = 'org_m' ORDER BY s.api_key_id, s.scope"
            )
        )
        return [(key_id, scope, org, bool(same)) for key_id, scope, org, same in rows]

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0007_with_keys)
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            carried = await connection.run_sync(scope_rows)
            await connection.execute(
                text("DELETE FROM api_key_scopes WHERE organization_id = 'org_m'")
            )
            await connection.execute(text("DELETE FROM api_keys WHERE organization_id = 'org_m'"))
            await connection.execute(text("DELETE FROM organizations WHERE id = 'org_m'"))
    finally:
        await engine.dispose()
    assert carried == [
        (keys[0][0], "read:billing", "org_m", True),
        (keys[0][0], "read:charge_points", "org_m", True),
        (keys[1][0], "write:webhooks", "org_m", True),
    ]


async def test_0010_leaves_existing_keys_enabled_unrestricted_and_unlimited(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    created = datetime(2026, 11, 1, 12, 0)
    key_id = "key_" + "c" * 22

    def to_0009_with_a_key(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0009")
        connection.execute(
            text("INSERT INTO organizations (id, name, created_at) VALUES ('org_n', 'N', :at)"),
            {"at": created},
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (id, organization_id, name, name_key, scopes_text,"
                " key_hash, hint, created_at) VALUES (:id, 'org_n', 'k', 'k', 'read:billing',"
                " :id, 'kh_…', :at)"
            ),
            {"id": key_id, "at": created},
        )
        connection.execute(
            text(
                "INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)"
                " VALUES (:id, 'read:billing', 'org_n', :at)"
            ),
            {"id": key_id, "at": created},
        )

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0009_with_a_key)
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT enabled, meta, ip_allowlist, credits_remaining, credits_version"
                        " FROM api_keys WHERE id = :id"
                    ),
                    {"id": key_id},
                )
            ).one()
            for table in ("api_key_scopes", "api_keys"):
                await connection.execute(
                    text(f"DELETE FROM {table} WHERE organization_id = 'org_n'")
                )
            await connection.execute(text("DELETE FROM organizations WHERE id = 'org_n'"))
    finally:
        await engine.dispose()
    assert (bool(row[0]), *row[1:]) == (True, None, None, None, 0)


async def test_0011_gives_existing_organizations_the_revoke_policy_for_leaked_keys(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    created = datetime(2026, 11, 1, 12, 0)

    def to_0009_with_a_key(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0009")
        connection.execute(
            text("INSERT INTO organizations (id, name, created_at) VALUES ('org_l', 'L', :at)"),
            {"at": created},
        )
        connection.execute(
            text(
                "INSERT INTO api_keys (id, organization_id, name, name_key, scopes_text,"
                " key_hash, hint, created_at) VALUES ('key_l', 'org_l', 'k', 'k', 'read:billing',"
                " 'hash_l', 'kh_…', :at)"
            ),
            {"at": created},
        )

    def carried(connection: Connection) -> list[tuple[Any, ...]]:
        rows = connection.execute(
            text(
                "SELECT o.leaked_key_action, k.leaked_at FROM organizations o"
                " JOIN api_keys k ON k.organization_id = o.id WHERE o.id = 'org_l'"
            )
        )
        return [tuple(row) for row in rows]

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0009_with_a_key)
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            found = await connection.run_sync(carried)
            await connection.execute(text("DELETE FROM api_keys WHERE organization_id = 'org_l'"))
            await connection.execute(text("DELETE FROM organizations WHERE id = 'org_l'"))
    finally:
        await engine.dispose()
    assert found == [("REVOKE", None)]


async def test_0012_keeps_organizations_and_usage_and_makes_room_for_longer_outcomes(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    created = datetime(2026, 11, 1, 12, 0)

    def to_0009_with_data(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0009")
        connection.execute(
            text("INSERT INTO organizations (id, name, created_at) VALUES ('org_o', 'O', :at)"),
            {"at": created},
        )
        for table, key_column in (
            ("usage_buckets", ", api_key_id, operation"),
            ("organization_usage", ""),
        ):
            connection.execute(
                text(
                    f"INSERT INTO {table} (organization_id, granularity, bucket_start{key_column},"
                    f" outcome, count) VALUES ('org_o', 'DAY', :at"
                    f"{', :key, :op' if key_column else ''}, 'REVOKED', 7)"
                ),
                {"at": created, "key": "key_o", "op": "verify"},
            )

    def after_upgrade(connection: Connection) -> list[tuple[Any, ...]]:
        organization = connection.execute(
            text("SELECT name, external_id, suspended_at FROM organizations WHERE id = 'org_o'")
        ).one()
        # An outcome of 22 characters now fits, on PostgreSQL too (varchar(20) before).
        connection.execute(
            text(
                "INSERT INTO organization_usage (organization_id, granularity, bucket_start,"
                " outcome, count) VALUES ('org_o', 'HOUR', :at, 'ORGANIZATION_SUSPENDED', 1)"
            ),
            {"at": created},
        )
        counts = connection.execute(
            text(
                "SELECT 'buckets', outcome, count FROM usage_buckets"
                " WHERE organization_id = 'org_o'"
                " UNION ALL SELECT 'organization', outcome, count FROM organization_usage"
                " WHERE organization_id = 'org_o' ORDER BY 1, 2"
            )
        ).all()
        for table in ("usage_buckets", "organization_usage", "organizations"):
            key = "id" if table == "organizations" else "organization_id"
            connection.execute(text(f"DELETE FROM {table} WHERE {key} = 'org_o'"))
        return [tuple(organization), *(tuple(row) for row in counts)]

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0009_with_data)
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            found = await connection.run_sync(after_upgrade)
    finally:
        await engine.dispose()
    assert found == [
        ("O", None, None),
        ("buckets", "REVOKED", 7),
        ("organization", "ORGANIZATION_SUSPENDED", 1),
        ("organization", "REVOKED", 7),
    ]


async def test_0013_sums_each_keys_usage_from_its_buckets(database_url: str) -> None:
    engine = create_engine(database_url)
    day = datetime(2026, 11, 1)
    buckets = [
        ("key_p", "GET /a", "VALID", 5),
        ("key_p", "GET /b", "VALID", 2),
        ("key_p", "GET /a", "REVOKED", 3),
        ("key_q", "GET /a", "RATE_LIMITED", 4),
    ]

    def to_0012_with_usage(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "0012")
        for key_id, operation, outcome, count in buckets:
            connection.execute(
                text(
                    "INSERT INTO usage_buckets (organization_id, granularity, bucket_start,"
                    " api_key_id, operation, outcome, count) VALUES ('org_p', 'DAY', :at, :key,"
                    " :op, :outcome, :count)"
                ),
                {"at": day, "key": key_id, "op": operation, "outcome": outcome, "count": count},
            )

    def carried(connection: Connection) -> list[tuple[Any, ...]]:
        rows = connection.execute(
            text(
                "SELECT api_key_id, granularity, requests, valid FROM key_usage"
                " WHERE organization_id = 'org_p' ORDER BY api_key_id"
            )
        ).all()
        for table in ("usage_buckets", "key_usage"):
            connection.execute(text(f"DELETE FROM {table} WHERE organization_id = 'org_p'"))
        return [tuple(row) for row in rows]

    try:
        async with engine.begin() as connection:
            await connection.run_sync(to_0012_with_usage)
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            found = await connection.run_sync(carried)
    finally:
        await engine.dispose()
    assert found == [("key_p", "DAY", 10, 7), ("key_q", "DAY", 4, 0)]
