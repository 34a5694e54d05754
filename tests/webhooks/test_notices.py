"""Expiry notices: key.expiring 7 days and 1 day before a key expires, key.expired once it has;
each exactly once per key and occasion, however often, and by however many instances at once,
the job runs. The job takes its "now" from the test."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from app.kit.db import session_scope
from app.kit.timeutil import utcnow
from app.runtime import Runtime
from app.webhooks.notices import notice_expiries
from tests.support import Tenant, make_key
from tests.webhooks.support import rows


async def run_at(runtime: Runtime, moment: datetime) -> int:
    async with session_scope(runtime.sessionmaker) as session:
        return await notice_expiries(session, moment)


async def notices(runtime: Runtime) -> list[tuple[str, str, int | None]]:
    found = await rows(
        runtime,
        "SELECT type, subject_id, data FROM outbox_events"
        " WHERE type IN ('key.expiring', 'key.expired') ORDER BY sequence",
    )
    return [(kind, subject, json.loads(data).get("expiresInDays")) for kind, subject, data in found]


async def test_seven_days_one_day_and_expired_each_once(runtime: Runtime, tenant: Tenant) -> None:
    start = utcnow()
    key = await make_key(runtime, tenant, "ten days", expires_in_days=10)

    assert await run_at(runtime, start) == 0
    for moment in (start + timedelta(days=3, minutes=1), start + timedelta(days=4)):
        await run_at(runtime, moment)
    assert await notices(runtime) == [("key.expiring", key.id, 7)]

    for moment in (start + timedelta(days=9, minutes=1), start + timedelta(days=9, hours=12)):
        await run_at(runtime, moment)
    await run_at(runtime, start + timedelta(days=10, minutes=1))
    await run_at(runtime, start + timedelta(days=12))

    assert await notices(runtime) == [
        ("key.expiring", key.id, 7),
        ("key.expiring", key.id, 1),
        ("key.expired", key.id, None),
    ]


async def test_a_key_made_to_live_three_days_never_hears_it_has_seven_left(
    runtime: Runtime, tenant: Tenant
) -> None:
    start = utcnow()
    key = await make_key(runtime, tenant, "short", expires_in_days=3)
    await run_at(runtime, start + timedelta(minutes=1))
    await run_at(runtime, start + timedelta(days=2, minutes=1))
    assert await notices(runtime) == [("key.expiring", key.id, 1)]


async def test_a_job_that_was_down_announces_only_the_expiry_not_stale_warnings(
    runtime: Runtime, tenant: Tenant
) -> None:
    start = utcnow()
    key = await make_key(runtime, tenant, "k", expires_in_days=10)
    await run_at(runtime, start + timedelta(days=12))
    assert await notices(runtime) == [("key.expired", key.id, None)]
    # An expiry older than a week is not news.
    old = await make_key(runtime, tenant, "old", expires_in_days=1)
    await run_at(runtime, start + timedelta(days=9))
    assert ("key.expired", old.id, None) not in await notices(runtime)


async def test_revoked_keys_get_no_notice(runtime: Runtime, tenant: Tenant) -> None:
    from app.auth.principal import Caller
    from app.keys.revocation import revoke_key

    start = utcnow()
    key = await make_key(runtime, tenant, "k", expires_in_days=10)
    async with session_scope(runtime.sessionmaker) as session:
        caller = Caller(tenant.organization_id, runtime.catalogue.names())
        await revoke_key(session, caller, key.id, broadcast=runtime.broadcast)
    for days in (3.1, 9.1, 10.1):
        await run_at(runtime, start + timedelta(days=days))
    assert await notices(runtime) == []


async def test_instances_running_the_job_at_once_write_each_notice_once(
    runtime: Runtime, tenant: Tenant
) -> None:
    start = utcnow()
    keys = [await make_key(runtime, tenant, f"k{n}", expires_in_days=5) for n in range(5)]
    moment = start + timedelta(days=4, minutes=1)

    await asyncio.gather(*(run_at(runtime, moment) for _ in range(4)))
    await run_at(runtime, moment)  # and a restart later

    assert sorted(await notices(runtime)) == sorted(("key.expiring", k.id, 1) for k in keys)


# SQLite runs one writing transaction at a time: there is nothing to interleave.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_key_another_transaction_is_changing_is_noticed_at_the_next_run(
    runtime: Runtime, tenant: Tenant
) -> None:
    start = utcnow()
    key = await make_key(runtime, tenant, "ten days", expires_in_days=10)
    moment = start + timedelta(days=3, minutes=1)

    async with runtime.engine.connect() as other:
        # Held as a change to the key holds it: the job neither waits for it nor numbers an
        # event about it meanwhile.
        await other.execute(
            text("SELECT 1 FROM api_keys WHERE id = :id FOR NO KEY UPDATE"), {"id": key.id}
        )
        assert await run_at(runtime, moment) == 0
        await other.rollback()

    assert await run_at(runtime, moment) == 1
    assert await notices(runtime) == [("key.expiring", key.id, 7)]
