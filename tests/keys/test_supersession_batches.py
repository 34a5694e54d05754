"""Single-active-key over many keys: the creation marks one batch and returns, the rest are
marked in batches of their own; every key it replaces is refused from the commit on, and each
gets its audit and webhook event once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.keys import policy
from app.keys import schemas as keys_schemas
from app.keys import service as keys_service
from app.keys.repository import add_key
from app.keys.revocation import revoke_key
from app.keys.supersession import finish_supersessions
from app.kit.db import session_scope
from app.kit.errors import UserError
from app.models.keys import ApiKey
from app.runtime import Runtime
from tests.lifecycle_support import create_key, update_policy
from tests.support import IssuedKey, Tenant, count_statements, eventually, make_key

BATCH = 3


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "SUPERSEDED_PER_BATCH", BATCH)


async def single_active_key(runtime: Runtime, tenant: Tenant, grace_hours: int = 0) -> None:
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE organizations SET single_active_key = :on, supersede_grace_hours = :hours"
                " WHERE id = :id"
            ),
            {"on": True, "hours": grace_hours, "id": tenant.organization_id},
        )


def admin(runtime: Runtime, tenant: Tenant) -> Caller:
    return Caller(
        tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id, "kh_admin…"
    )


async def create(runtime: Runtime, tenant: Tenant, name: str) -> keys_schemas.KeyCreated:
    async with session_scope(runtime.sessionmaker) as session:
        created = await keys_service.create_key(
            session,
            admin(runtime, tenant),
            keys_schemas.KeyCreate(name=name, scopes=["read:charge_points"]),
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, keys_schemas.KeyCreated), created
    return created


async def outcome(runtime: Runtime, secret: str) -> str:
    return (await runtime.verifier.verify(Presentation.of(secret))).outcome.value


async def rows(runtime: Runtime, sql: str, **values: object) -> list[tuple[Any, ...]]:
    async with runtime.engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(text(sql), values)).all()]


async def keys(runtime: Runtime, tenant: Tenant, count: int) -> list[IssuedKey]:
    made = [await make_key(runtime, tenant, f"integration {number}") for number in range(count)]
    for key in made:
        assert await outcome(runtime, key.secret) == "VALID"  # cached: the change must reach it
    return made


async def test_every_replaced_key_is_refused_at_once_while_batches_remain(
    runtime: Runtime, tenant: Tenant
) -> None:
    old = await keys(runtime, tenant, 2 * BATCH + 1)
    await single_active_key(runtime, tenant)

    created = await create(runtime, tenant, "the one")

    marked = await rows(
        runtime, "SELECT id FROM api_keys WHERE superseded_by_key_id = :id", id=created.api_key.id
    )
    assert len(marked) == BATCH  # the creation's own batch; the rest are left for later
    assert [key.id for key in created.superseded] == [key.id for key in old[:BATCH]]
    for key in old:
        assert await outcome(runtime, key.secret) == "SUPERSEDED"
    assert await outcome(runtime, created.secret) == "VALID"
    assert await outcome(runtime, tenant.admin_key) == "VALID"  # the caller's own key is kept


async def test_batches_mark_every_key_once_with_one_audit_and_one_webhook_event_each(
    runtime: Runtime, tenant: Tenant
) -> None:
    old = await keys(runtime, tenant, 2 * BATCH + 1)
    await single_active_key(runtime, tenant, grace_hours=2)
    created = await create(runtime, tenant, "the one")

    assert await finish_supersessions(runtime.sessionmaker) == 2  # 3 more, then the last 1
    assert await finish_supersessions(runtime.sessionmaker) == 0

    marked = await rows(
        runtime,
        "SELECT id, superseded_at FROM api_keys WHERE superseded_by_key_id = :id ORDER BY id",
        id=created.api_key.id,
    )
    assert [key_id for key_id, _ in marked] == sorted(key.id for key in old)
    assert len({superseded_at for _, superseded_at in marked}) == 1
    audited = await rows(
        runtime,
        "SELECT api_key_id, actor_key_id FROM audit_events WHERE action = 'KEY_SUPERSEDED'",
    )
    assert sorted(audited) == sorted((key.id, tenant.admin_key_id) for key in old)
    announced = await rows(
        runtime, "SELECT subject_id FROM outbox_events WHERE type = 'key.superseded'"
    )
    assert sorted(subject for (subject,) in announced) == sorted(key.id for key in old)
    assert await rows(runtime, "SELECT * FROM key_supersessions") == []
    for key in old:  # in their grace period: still valid, and told they are being replaced
        verification = await runtime.verifier.verify(Presentation.of(key.secret))
        assert verification.outcome.value == "VALID"
        assert verification.key is not None
        assert verification.key.superseded_at is not None


async def test_a_second_creation_waits_for_the_first_and_replaces_the_first_new_key(
    runtime: Runtime, tenant: Tenant
) -> None:
    old = await keys(runtime, tenant, BATCH + 2)
    await single_active_key(runtime, tenant)
    first = await create(runtime, tenant, "first")

    second = await create(runtime, tenant, "second")

    assert second.superseded == []  # the first one's keys are not marked yet: it waits its turn
    for key in old:
        assert await outcome(runtime, key.secret) == "SUPERSEDED"
    assert await outcome(runtime, first.secret) == "SUPERSEDED"
    assert await outcome(runtime, second.secret) == "VALID"
    await finish_supersessions(runtime.sessionmaker)
    replaced = dict(
        await rows(
            runtime,
            "SELECT id, superseded_by_key_id FROM api_keys WHERE superseded_by_key_id IS NOT NULL",
        )
    )
    assert replaced == {
        **{key.id: first.api_key.id for key in old},
        first.api_key.id: second.api_key.id,
    }


async def test_a_key_revoked_or_created_meanwhile_is_not_marked(
    runtime: Runtime, tenant: Tenant
) -> None:
    old = await keys(runtime, tenant, BATCH + 2)
    await single_active_key(runtime, tenant)
    created = await create(runtime, tenant, "the one")
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await revoke_key(
            session, admin(runtime, tenant), old[-1].id, broadcast=runtime.broadcast
        )
    assert not isinstance(revoked, UserError)
    later = await make_key(runtime, tenant, "made later")  # by the CLI: nothing is kept

    await finish_supersessions(runtime.sessionmaker)

    assert await outcome(runtime, old[-1].secret) == "REVOKED"
    marked = await rows(
        runtime, "SELECT id FROM api_keys WHERE superseded_by_key_id = :id", id=created.api_key.id
    )
    assert sorted(key_id for (key_id,) in marked) == sorted(key.id for key in old[:-1])
    assert await outcome(runtime, later.secret) == "VALID"


async def test_a_batch_is_a_few_statements_however_many_keys_it_marks(
    runtime: Runtime, tenant: Tenant
) -> None:
    await keys(runtime, tenant, 2)
    await bulk_keys(runtime, tenant, 40)
    await single_active_key(runtime, tenant)
    await create(runtime, tenant, "the one")

    with count_statements(runtime.engine) as log:
        assert await finish_supersessions(runtime.sessionmaker, limit=20) == 2

    # Per batch: the supersession, the keys, their update, the replacement, the audit events,
    # their webhook events, the progress (the last batch: the supersession forgotten).
    writes = [s for s in log.statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
    assert len(writes) <= 2 * 7 + 2, writes


async def bulk_keys(runtime: Runtime, tenant: Tenant, count: int) -> None:
    now = datetime.now(UTC)
    async with session_scope(runtime.sessionmaker) as session:
        for number in range(count):
            add_key(
                session,
                ApiKey(
                    organization_id=tenant.organization_id,
                    name=f"bulk {number}",
                    name_key=f"bulk {number}",
                    scopes_text="read:billing",
                    key_hash=sha256(f"{tenant.organization_id} {number}".encode()).hexdigest(),
                    hint="kh_bulk…0000",
                    created_at=now - timedelta(hours=1, seconds=number),
                ),
            )


async def test_the_running_service_marks_the_rest_once_the_creation_commits(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    old = await keys(runtime, tenant, 2 * BATCH + 2)
    await update_policy(client, tenant.admin_key, singleActiveKey=True)

    created = await create_key(client, tenant.admin_key, name="the one")

    async def all_marked() -> bool:
        marked = await rows(
            runtime,
            "SELECT id FROM api_keys WHERE superseded_by_key_id = :id",
            id=created["apiKey"]["id"],
        )
        return len(marked) == len(old)

    assert await eventually(all_marked, within=10)
    assert await eventually(lambda: _none_pending(runtime), within=10), (
        "the supersession is forgotten once its last batch is marked"
    )


async def _none_pending(runtime: Runtime) -> bool:
    return await rows(runtime, "SELECT * FROM key_supersessions") == []
