"""Delivery: every committed event reaches every subscribed endpoint, signed as Standard
Webhooks, at least once, in order per key, retried with backoff for three days.

The worker is run by hand here, step by step, on a clock the test moves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from app.auth.principal import Caller
from app.keys.revocation import revoke_key
from app.kit.db import session_scope
from app.kit.timeutil import utcnow
from app.models.audit import AuditAction, record_event
from app.runtime import Runtime
from app.webhooks import schemas, service
from app.webhooks.worker import DeliveryWorker, retry_delay
from tests.support import Tenant, make_key
from tests.webhooks.receiver import Receiver
from tests.webhooks.support import ALL_KEY_EVENTS, Endpoint, rows


class Clock:
    def __init__(self) -> None:
        # A little ahead: what the test does next has happened by the worker's "now".
        self.now = utcnow() + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def worker(runtime: Runtime, clock: Clock) -> AsyncIterator[DeliveryWorker]:
    worker = DeliveryWorker(
        runtime.sessionmaker, runtime.settings, runtime.server_secret, clock=clock
    )
    yield worker
    await worker.close()


def admin(tenant: Tenant, runtime: Runtime) -> Caller:
    return Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)


async def endpoint_for(
    runtime: Runtime, tenant: Tenant, url: str, events: list[str] | None = None
) -> Endpoint:
    async with session_scope(runtime.sessionmaker) as session:
        made = await service.create_endpoint(
            session,
            admin(tenant, runtime),
            schemas.EndpointCreate(url=url, events=events or ALL_KEY_EVENTS),
            allowed_hosts=frozenset({"127.0.0.1"}),
            server_secret=runtime.server_secret,
        )
    assert isinstance(made, schemas.EndpointWithSecret), made
    return Endpoint(made.endpoint.id, made.signing_secret)


async def run(worker: DeliveryWorker, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not await worker.step():
            return


async def revoke(runtime: Runtime, tenant: Tenant, key_id: str) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        await revoke_key(session, admin(tenant, runtime), key_id, broadcast=runtime.broadcast)


async def test_an_event_arrives_signed_with_the_keys_public_fields_only(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker
) -> None:
    endpoint = await endpoint_for(runtime, tenant, receiver.url)
    key = await make_key(runtime, tenant, "deploy", expires_in_days=30)

    await run(worker)

    [request] = receiver.received
    event = request.verified_with(endpoint.secret)
    assert event["type"] == "key.created"
    assert event["organizationId"] == tenant.organization_id
    assert request.headers["webhook-id"] == event["id"]
    data = event["data"]["key"]
    assert data["id"] == key.id
    assert data["name"] == "deploy"
    assert data["hint"] == key.hint
    assert data["status"] == "ACTIVE"
    assert data["expiresAt"] is not None
    assert key.secret not in request.body.decode()
    assert "hash" not in request.body.decode().lower()
    [(status, attempts, code)] = await rows(
        runtime, "SELECT status, attempts, response_status FROM webhook_deliveries"
    )
    assert (status, attempts, code) == ("SUCCEEDED", 1, 200)


async def test_only_subscribed_types_of_the_endpoints_own_organization_are_sent(
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    worker: DeliveryWorker,
) -> None:
    await endpoint_for(runtime, tenant, receiver.url, events=["key.revoked"])
    mine = await make_key(runtime, tenant, "mine")
    theirs = await make_key(runtime, other_tenant, "theirs")
    await revoke(runtime, other_tenant, theirs.id)
    await revoke(runtime, tenant, mine.id)

    await run(worker)

    assert [(e["type"], e["data"]["key"]["id"]) for e in receiver.events()] == [
        ("key.revoked", mine.id)
    ]


async def test_receiver_down_then_up_every_event_arrives_in_order_per_key(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    endpoint = await endpoint_for(runtime, tenant, receiver.url)
    await receiver.stop()
    keys = [await make_key(runtime, tenant, f"k{n}") for n in range(3)]
    for key in keys:
        await revoke(runtime, tenant, key.id)

    await run(worker)  # refused: nobody listens
    clock.advance(seconds=3)
    await run(worker)  # again
    attempts = await rows(runtime, "SELECT attempts, status FROM webhook_deliveries")
    # One delivery per key is attempted; each key's revocation waits behind its creation.
    assert sorted(attempts) == [(0, "PENDING")] * 3 + [(2, "PENDING")] * 3

    await receiver.start()  # the same port
    clock.advance(minutes=10)
    await run(worker)

    received = [request.verified_with(endpoint.secret) for request in receiver.received]
    assert len(received) == 6
    for key in keys:
        about = [e["type"] for e in received if e["data"]["key"]["id"] == key.id]
        assert about == ["key.created", "key.revoked"]
    assert await rows(runtime, "SELECT DISTINCT status FROM webhook_deliveries") == [("SUCCEEDED",)]


async def test_a_failing_answer_is_retried_about_a_second_later_then_doubling(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    await endpoint_for(runtime, tenant, receiver.url)
    receiver.status = 500
    await make_key(runtime, tenant, "k")
    started = clock.now

    await run(worker)
    [(next_at, excerpt)] = await rows(
        runtime, "SELECT next_attempt_at, response_excerpt FROM webhook_deliveries"
    )
    first_wait = (_aware(next_at) - started).total_seconds()
    assert 0.8 <= first_wait <= 1.2
    assert excerpt == "ok"

    await run(worker)  # not due yet: nothing is sent
    assert len(receiver.received) == 1
    clock.advance(seconds=1.3)
    receiver.status = 204
    await run(worker)
    assert len(receiver.received) == 2
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]


def test_the_retry_delays_double_from_a_second_to_at_most_an_hour() -> None:
    rng = random.Random(7)
    for attempts, base in [(1, 1), (2, 2), (3, 4), (10, 512), (12, 2048)]:
        delay = retry_delay(attempts, rng).total_seconds()
        assert base * 0.8 <= delay <= base * 1.2
    assert all(retry_delay(n, rng) <= timedelta(hours=1) for n in range(12, 40))


async def test_after_three_days_the_delivery_fails_and_the_endpoint_is_disabled(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    endpoint = await endpoint_for(runtime, tenant, receiver.url)
    receiver.status = 503
    await make_key(runtime, tenant, "k")
    for _ in range(100):
        await run(worker)
        clock.advance(hours=1)

    [(status, attempts)] = await rows(runtime, "SELECT status, attempts FROM webhook_deliveries")
    assert status == "FAILED"
    assert 70 <= attempts <= 85  # about an hour apart after the first twelve
    [(disabled,)] = await rows(runtime, "SELECT disabled_at FROM webhook_endpoints")
    assert disabled is not None
    actions = await rows(
        runtime, "SELECT details FROM audit_events WHERE action = 'WEBHOOK_ENDPOINT_DISABLED'"
    )
    assert len(actions) == 1
    assert endpoint.id in actions[0][0]

    # Disabled: later events are not sent to it.
    sent = len(receiver.received)
    await make_key(runtime, tenant, "later")
    await run(worker)
    assert len(receiver.received) == sent


async def test_a_delivery_held_by_one_instance_is_not_sent_by_another_until_its_lease_ends(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, clock: Clock
) -> None:
    from app.webhooks import repository

    await endpoint_for(runtime, tenant, receiver.url)
    await make_key(runtime, tenant, "k")
    lease = timedelta(seconds=30)
    async with session_scope(runtime.sessionmaker) as session:
        await repository.fan_out(session, clock.now, limit=10)
    async with session_scope(runtime.sessionmaker) as session:
        first = await repository.claim(session, clock.now, lease=lease, limit=10)
    async with session_scope(runtime.sessionmaker) as session:
        second = await repository.claim(session, clock.now, lease=lease, limit=10)
    async with session_scope(runtime.sessionmaker) as session:
        after_lease = await repository.claim(
            session, clock.now + lease + timedelta(seconds=1), lease=lease, limit=10
        )

    assert len(first) == 1
    assert second == []
    assert [d.id for d in after_lease] == [d.id for d in first]  # its holder died: taken over


async def test_after_a_rotation_both_secrets_sign_for_a_day(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    endpoint = await endpoint_for(runtime, tenant, receiver.url)
    async with session_scope(runtime.sessionmaker) as session:
        rotated = await service.rotate_signing_secret(
            session, admin(tenant, runtime), endpoint.id, server_secret=runtime.server_secret
        )
    assert isinstance(rotated, schemas.EndpointWithSecret)
    await make_key(runtime, tenant, "k")
    await run(worker)

    [request] = receiver.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    request.verified_with(endpoint.secret)
    request.verified_with(rotated.signing_secret)

    clock.advance(hours=25)
    await make_key(runtime, tenant, "later")
    await run(worker)
    assert len(receiver.received[1].headers["webhook-signature"].split(" ")) == 1


async def test_a_superseded_keys_event_waits_until_the_key_stops_working(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    from app.organizations.service import PolicyUpdate, update_key_policy

    await endpoint_for(runtime, tenant, receiver.url, events=["key.superseded"])
    old = await make_key(runtime, tenant, "old")
    async with session_scope(runtime.sessionmaker) as session:
        await update_key_policy(
            session,
            admin(tenant, runtime),
            PolicyUpdate(single_active_key=True, supersede_grace_hours=2),
        )
    await make_key(runtime, tenant, "new")

    await run(worker)
    assert receiver.received == []
    clock.advance(hours=2, seconds=1)
    await run(worker)
    superseded = {e["data"]["key"]["id"] for e in receiver.events()}
    assert old.id in superseded
    assert tenant.admin_key_id in superseded


def _aware(value: datetime | str) -> datetime:
    from app.kit.timeutil import as_utc

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value)


_ = text


async def test_a_name_that_resolves_inside_the_network_is_never_connected_to(
    runtime: Runtime, tenant: Tenant, clock: Clock
) -> None:
    async def inside(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    worker = DeliveryWorker(
        runtime.sessionmaker, runtime.settings, runtime.server_secret, clock=clock, resolver=inside
    )
    try:
        await endpoint_for(runtime, tenant, "https://hooks.example.com/keyhouse")
        await make_key(runtime, tenant, "k")
        await run(worker)
    finally:
        await worker.close()

    [(status, attempts, code, excerpt)] = await rows(
        runtime,
        "SELECT status, attempts, response_status, response_excerpt FROM webhook_deliveries",
    )
    assert (status, attempts, code) == ("PENDING", 1, None)
    assert "private" in excerpt


async def test_two_instances_at_once_send_each_event_once(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, clock: Clock
) -> None:
    endpoint = await endpoint_for(runtime, tenant, receiver.url, events=["key.created"])
    keys = [await make_key(runtime, tenant, f"k{n}") for n in range(12)]
    workers = [
        DeliveryWorker(runtime.sessionmaker, runtime.settings, runtime.server_secret, clock=clock)
        for _ in range(2)
    ]
    try:
        await asyncio.gather(*(run(worker) for worker in workers))
    finally:
        for worker in workers:
            await worker.close()

    ids = [
        request.verified_with(endpoint.secret)["data"]["key"]["id"] for request in receiver.received
    ]
    assert sorted(ids) == sorted(key.id for key in keys)


async def test_an_event_waits_for_an_earlier_one_about_its_key_still_being_fanned_out(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker, clock: Clock
) -> None:
    from app.webhooks import repository

    await endpoint_for(runtime, tenant, receiver.url)
    key = await make_key(runtime, tenant, "k")
    await revoke(runtime, tenant, key.id)
    creation = (
        "UPDATE outbox_events SET fanned_out_at = :at"
        f" WHERE subject_id = '{key.id}' AND type = 'key.created'"
    )

    async def set_creation_fanned_out(at: datetime | None) -> None:
        async with runtime.engine.begin() as connection:
            await connection.execute(text(creation), {"at": at})

    # Another instance took the revocation first, while the creation is still being fanned
    # out by a transaction that has not committed: as far as this one sees, not fanned out.
    await set_creation_fanned_out(datetime(2000, 1, 1))
    async with session_scope(runtime.sessionmaker) as session:
        await repository.fan_out(session, clock.now, limit=10)
    await set_creation_fanned_out(None)
    async with session_scope(runtime.sessionmaker) as session:
        claimed = await repository.claim(session, clock.now, lease=timedelta(seconds=30), limit=10)
    assert claimed == []

    await run(worker)
    assert [e["type"] for e in receiver.events()] == ["key.created", "key.revoked"]


WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def _blocked_or_done(runtime: Runtime, task: asyncio.Task[None]) -> None:
    """Returns once ``task`` is done or waits for a lock (bounded: never a timed assertion)."""
    for _ in range(1000):
        if task.done():
            return
        async with runtime.engine.connect() as connection:
            if (await connection.execute(text(WAITING_FOR_A_LOCK))).scalar():
                return
        await asyncio.sleep(0.01)


# SQLite runs one writing transaction at a time: there is nothing to interleave.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_transactions_about_one_key_are_delivered_in_the_order_they_commit(
    runtime: Runtime, tenant: Tenant, receiver: Receiver, worker: DeliveryWorker
) -> None:
    await endpoint_for(runtime, tenant, receiver.url)
    key = await make_key(runtime, tenant, "k")
    committed: list[str] = []

    async def revocation() -> None:
        await revoke(runtime, tenant, key.id)
        committed.append("key.revoked")

    # The first transaction writes its event about the key (as a unit of work does: inserts
    # before updates) and stays open while a revocation of the key runs beside it.
    async with session_scope(runtime.sessionmaker) as session:
        record_event(session, admin(tenant, runtime), AuditAction.KEY_LEAKED, api_key_id=key.id)
        await session.flush()
        second = asyncio.create_task(revocation())
        await _blocked_or_done(runtime, second)
    committed.append("key.leaked")
    await second

    await run(worker)
    about = [e["type"] for e in receiver.events() if e["data"]["key"]["id"] == key.id]
    assert about == ["key.created", *committed]


async def test_the_lanes_read_the_outbox_when_woken_or_once_per_poll_interval(
    worker: DeliveryWorker, runtime: Runtime
) -> None:
    interval = runtime.settings.webhook_poll_interval_seconds
    assert worker._fan_out_due(100.0)  # a worker starting looks at once
    assert not worker._fan_out_due(100.0 + interval / 2)
    await worker.wake()  # an event committed by this instance
    assert worker._fan_out_due(100.0 + interval / 2)
    assert not worker._fan_out_due(100.0 + interval)
    assert worker._fan_out_due(100.0 + interval * 2)  # what other instances committed
