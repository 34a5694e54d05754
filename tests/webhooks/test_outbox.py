"""The outbox: a change that webhooks announce writes one event in the transaction of its audit
event; a change rolled back leaves neither; the event holds the key's public fields only."""

from __future__ import annotations

import json

import pytest

from app.auth.principal import Caller
from app.kit.db import session_scope
from app.models.audit import WEBHOOK_EVENTS, AuditAction, record_event
from app.runtime import Runtime
from tests.support import Tenant, make_key
from tests.webhooks.support import rows


async def test_creating_a_key_writes_its_audit_event_and_one_outbox_event(
    runtime: Runtime, tenant: Tenant
) -> None:
    before = len(await rows(runtime, "SELECT id FROM outbox_events"))
    key = await make_key(runtime, tenant, "ci", ["read:billing"])

    events = await rows(
        runtime,
        f"SELECT type, organization_id, data FROM outbox_events WHERE subject_id = '{key.id}'",
    )
    assert len(await rows(runtime, "SELECT id FROM outbox_events")) == before + 1
    [(kind, organization, data)] = events
    assert (kind, organization) == ("key.created", tenant.organization_id)
    fields = json.loads(data)["key"]
    assert set(fields) == {
        "id", "name", "hint", "scopes", "status", "createdAt", "expiresAt", "revokedAt",
        "supersededAt", "supersededByKeyId", "leakedAt",
    }  # fmt: skip
    assert key.secret not in data
    [(key_hash,)] = await rows(runtime, f"SELECT key_hash FROM api_keys WHERE id = '{key.id}'")
    assert key_hash not in data


async def test_a_change_rolled_back_leaves_no_event(runtime: Runtime, tenant: Tenant) -> None:
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    before = await rows(runtime, "SELECT id FROM outbox_events")

    async def failing_change() -> None:
        async with session_scope(runtime.sessionmaker) as session:
            record_event(session, caller, AuditAction.POLICY_UPDATED, details={"x": 1})
            await session.flush()
            raise RuntimeError("the change failed after its event was written")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await rows(runtime, "SELECT id FROM outbox_events") == before


async def test_only_announced_actions_reach_the_outbox(runtime: Runtime, tenant: Tenant) -> None:
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    before = await rows(runtime, "SELECT id FROM outbox_events")
    async with session_scope(runtime.sessionmaker) as session:
        record_event(session, caller, AuditAction.WEBHOOK_ENDPOINT_CREATED, details={})
    assert await rows(runtime, "SELECT id FROM outbox_events") == before


def test_key_updated_is_announced_by_name_once_the_action_exists() -> None:
    assert WEBHOOK_EVENTS["KEY_UPDATED"].value == "key.updated"
    for action in AuditAction:
        if action.name.startswith("KEY_"):
            assert action.value in WEBHOOK_EVENTS
