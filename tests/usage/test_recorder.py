"""Recording uses in memory and flushing them as additive upserts into minute, hour and day
buckets: exact counts, several instances, failed flushes, ``last_used_at``, retention."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.config import Settings
from app.db import create_engine, create_sessionmaker, session_scope
from app.keys import service as keys_service
from app.keys.models import ApiKey
from app.keys.outcomes import Outcome
from app.keys.secret import generate_secret
from app.runtime import Runtime, usage_retention
from app.usage.models import Granularity, UsageBucket
from app.usage.recorder import UsageRecorder
from tests.support import Tenant, count_statements, make_key

# (granularity, bucket_start, api_key_id, operation, outcome)
BucketId = tuple[str, datetime, str, str, str]
_buckets = UsageBucket.metadata.tables["usage_buckets"]
_keys = ApiKey.metadata.tables["api_keys"]


def _hour_start(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _minute_start(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _recent_moment() -> datetime:
    """A moment well inside every default retention, 17 min 23 s into an hour two hours ago."""
    return _hour_start(datetime.now(UTC)) - timedelta(hours=2) + timedelta(minutes=17, seconds=23)


def _recorder(
    runtime: Runtime,
    *,
    max_buckets: int = 50_000,
    retention: dict[Granularity, timedelta] | None = None,
) -> UsageRecorder:
    """A recorder of its own on the test's database: what one keyhouse instance holds."""
    return UsageRecorder(
        runtime.sessionmaker,
        flush_interval_seconds=3600,
        max_buckets=max_buckets,
        retention=usage_retention(runtime.settings) if retention is None else retention,
    )


async def _stored(runtime: Runtime) -> dict[BucketId, int]:
    statement = select(
        _buckets.c.granularity,
        _buckets.c.bucket_start,
        _buckets.c.api_key_id,
        _buckets.c.operation,
        _buckets.c.outcome,
        _buckets.c["count"],
    )
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {(g, start, key, op, outcome): int(count) for g, start, key, op, outcome, count in rows}


async def _totals_per_granularity(runtime: Runtime) -> dict[str, Counter[tuple[str, str, str]]]:
    """Per granularity: stored count per (key, operation, outcome), summed over time."""
    totals: dict[str, Counter[tuple[str, str, str]]] = {g.value: Counter() for g in Granularity}
    for (granularity, _, key_id, operation, outcome), count in (await _stored(runtime)).items():
        totals[granularity][(key_id, operation, outcome)] += count
    return totals


async def _last_used_at(runtime: Runtime, key_id: str) -> datetime | None:
    statement = select(_keys.c.last_used_at).where(_keys.c.id == key_id)
    async with runtime.engine.connect() as connection:
        last_used_at: datetime | None = (await connection.execute(statement)).scalar_one()
    return last_used_at


def _every_granularity(
    moment: datetime, key_id: str, operation: str, outcome: str, count: int
) -> dict[BucketId, int]:
    return {
        ("MINUTE", _minute_start(moment), key_id, operation, outcome): count,
        ("HOUR", _hour_start(moment), key_id, operation, outcome): count,
        ("DAY", _day_start(moment), key_id, operation, outcome): count,
    }


async def test_a_flushed_use_is_counted_in_its_minute_hour_and_day_buckets(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    for offset in (0, 5, 30):  # three uses within the same minute
        at = (moment + timedelta(seconds=offset)).timestamp()
        recorder.record(tenant.admin_key_id, tenant.organization_id, "GET /x", Outcome.VALID, at)

    await recorder.flush()

    assert await _stored(runtime) == _every_granularity(
        moment, tenant.admin_key_id, "GET /x", "VALID", 3
    )


async def test_minute_buckets_roll_up_into_one_hour_and_one_day_bucket(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    recorder.record(key, org, "GET /x", Outcome.VALID, moment.timestamp())
    recorder.record(key, org, "GET /x", Outcome.VALID, (moment + timedelta(minutes=1)).timestamp())
    recorder.record(key, org, "GET /x", Outcome.VALID, (moment + timedelta(minutes=9)).timestamp())

    await recorder.flush()

    assert await _stored(runtime) == {
        ("MINUTE", _minute_start(moment), key, "GET /x", "VALID"): 1,
        ("MINUTE", _minute_start(moment) + timedelta(minutes=1), key, "GET /x", "VALID"): 1,
        ("MINUTE", _minute_start(moment) + timedelta(minutes=9), key, "GET /x", "VALID"): 1,
        ("HOUR", _hour_start(moment), key, "GET /x", "VALID"): 3,
        ("DAY", _day_start(moment), key, "GET /x", "VALID"): 3,
    }


async def test_each_operation_and_outcome_has_its_own_bucket(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    key, org, at = tenant.admin_key_id, tenant.organization_id, moment.timestamp()
    recorder.record(key, org, "GET /x", Outcome.VALID, at)
    recorder.record(key, org, "GET /x", Outcome.RATE_LIMITED, at)
    recorder.record(key, org, "POST /x", Outcome.VALID, at)

    await recorder.flush()

    assert await _stored(runtime) == {
        **_every_granularity(moment, key, "GET /x", "VALID", 1),
        **_every_granularity(moment, key, "GET /x", "RATE_LIMITED", 1),
        **_every_granularity(moment, key, "POST /x", "VALID", 1),
    }


async def test_two_instances_flushing_the_same_bucket_add_up(
    runtime: Runtime, tenant: Tenant
) -> None:
    first, second = _recorder(runtime), _recorder(runtime)
    moment = _recent_moment()
    for recorder, uses in ((first, 3), (second, 4)):
        for _ in range(uses):
            recorder.record(
                tenant.admin_key_id,
                tenant.organization_id,
                "GET /x",
                Outcome.VALID,
                moment.timestamp(),
            )

    await first.flush()
    await second.flush()

    assert await _stored(runtime) == _every_granularity(
        moment, tenant.admin_key_id, "GET /x", "VALID", 7
    )


async def test_two_instances_flushing_the_same_buckets_at_the_same_time_both_succeed(
    runtime: Runtime, tenant: Tenant
) -> None:
    # Two instances that saw the same keys in a different order write the same rows in a
    # different order: on PostgreSQL, row locks taken in opposite orders deadlock unless every
    # flush writes its rows in one canonical order.
    first, second = _recorder(runtime), _recorder(runtime)
    key_ids = [f"key_{number:04d}" for number in range(5_000)]
    at = _recent_moment().timestamp()
    for key_id in key_ids:
        first.record(key_id, tenant.organization_id, "GET /x", Outcome.REVOKED, at)
    for key_id in reversed(key_ids):
        second.record(key_id, tenant.organization_id, "GET /x", Outcome.REVOKED, at)

    async with runtime.engine.connect() as one, runtime.engine.connect() as other:
        # Two pooled connections ready, so that both flushes start writing at once.
        await one.execute(select(1))
        await other.execute(select(1))
    outcomes = await asyncio.gather(first.flush(), second.flush(), return_exceptions=True)

    assert [repr(outcome) for outcome in outcomes if outcome is not None] == []
    stored = await _stored(runtime)
    assert set(stored.values()) == {2}
    assert len(stored) == 3 * len(key_ids)


@pytest.fixture
async def instances(settings: Settings) -> AsyncIterator[list[Runtime]]:
    """Two keyhouse instances on the fixture's database, each with its own memory, cache and
    rate-limit counters (a budget of 40 uses per key per day, so that some uses are refused)."""
    shared = Settings(
        database_url=settings.database_url,
        usage_flush_interval_seconds=3600,
        default_rate_limit_requests=40,
        default_rate_limit_per_seconds=86_400,
    )
    created = [Runtime.create(shared), Runtime.create(shared)]
    for instance in created:
        await instance.start()
    yield created
    for instance in created:
        await instance.engine.dispose()


async def test_stored_totals_equal_every_verification_of_two_instances_after_shutdown(
    runtime: Runtime, tenant: Tenant, instances: list[Runtime]
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:charge_points"])
    billing = await make_key(runtime, tenant, "billing", ["read:billing"])
    retired = await make_key(runtime, tenant, "retired", ["read:charge_points"])
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    async with session_scope(runtime.sessionmaker) as session:
        await keys_service.revoke_key(session, caller, retired.id, broadcast=runtime.broadcast)
    plan = [
        (reader, ["read:charge_points"], "GET /charge-points"),
        (reader, ["write:charge_points"], "POST /charge-points"),
        (billing, ["read:billing"], "GET /invoices"),
        (billing, [], "verify"),
        (retired, ["read:charge_points"], "GET /charge-points"),
    ]
    expected: Counter[tuple[str, str, str]] = Counter()

    for use in range(3_001):
        key, scopes, operation = plan[use % len(plan)]
        instance = instances[use % 2]
        verification = await instance.verifier.verify(
            Presentation.of(key.secret), required_scopes=scopes, operation=operation
        )
        expected[(key.id, operation, verification.outcome.value)] += 1
        if use % 1_000 == 999:
            await instance.recorder.flush()  # a periodic flush in the middle of the load
    for instance in instances:
        await instance.stop()  # graceful shutdown writes what is still in memory

    assert {outcome for _, _, outcome in expected} == {
        "VALID",
        "RATE_LIMITED",
        "INSUFFICIENT_SCOPE",
        "REVOKED",
    }
    assert sum(expected.values()) == 3_001
    totals = await _totals_per_granularity(runtime)
    assert totals == {"MINUTE": expected, "HOUR": expected, "DAY": expected}


def _unreachable_database_url(runtime: Runtime, tmp_path: Path) -> str:
    if runtime.settings.is_sqlite:
        return f"sqlite+aiosqlite:///{tmp_path}/no-such-directory/keyhouse.db"
    return "postgresql+asyncpg://postgres@127.0.0.1:1/keyhouse"  # nothing listens on port 1


async def test_a_failed_flush_keeps_its_counts_and_a_later_flush_writes_them(
    runtime: Runtime, tenant: Tenant, tmp_path: Path
) -> None:
    unreachable = create_engine(_unreachable_database_url(runtime, tmp_path))
    recorder = UsageRecorder(create_sessionmaker(unreachable), flush_interval_seconds=3600)
    moment = _recent_moment()
    for _ in range(2):
        recorder.record(
            tenant.admin_key_id,
            tenant.organization_id,
            "GET /x",
            Outcome.VALID,
            moment.timestamp(),
        )

    with pytest.raises((OSError, SQLAlchemyError)):
        await recorder.flush()
    await unreachable.dispose()
    recorder._sessionmaker = runtime.sessionmaker  # the database is back
    await recorder.flush()

    assert await _stored(runtime) == _every_granularity(
        moment, tenant.admin_key_id, "GET /x", "VALID", 2
    )
    assert await _last_used_at(runtime, tenant.admin_key_id) == moment


async def test_a_flush_with_nothing_recorded_sends_no_statement(runtime: Runtime) -> None:
    recorder = _recorder(runtime)

    with count_statements(runtime.engine) as statements:
        await recorder.flush()

    assert statements.statements == []


async def test_a_flush_writes_the_latest_successful_use_as_last_used_at(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    for minutes in (0, 3, 7):
        at = (moment + timedelta(minutes=minutes)).timestamp()
        recorder.record(tenant.admin_key_id, tenant.organization_id, "GET /x", Outcome.VALID, at)

    await recorder.flush()

    assert await _last_used_at(runtime, tenant.admin_key_id) == moment + timedelta(minutes=7)


async def test_the_latest_use_is_last_used_at_also_when_uses_are_recorded_out_of_order(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    for minutes in (0, 7, 3):  # e.g. the wall clock stepped back between two uses
        at = (moment + timedelta(minutes=minutes)).timestamp()
        recorder.record(tenant.admin_key_id, tenant.organization_id, "GET /x", Outcome.VALID, at)

    await recorder.flush()

    assert await _last_used_at(runtime, tenant.admin_key_id) == moment + timedelta(minutes=7)


async def test_an_older_flush_does_not_overwrite_a_newer_last_used_at(
    runtime: Runtime, tenant: Tenant
) -> None:
    newer, older = _recorder(runtime), _recorder(runtime)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    newer.record(key, org, "GET /x", Outcome.VALID, (moment + timedelta(minutes=5)).timestamp())
    older.record(key, org, "GET /x", Outcome.VALID, moment.timestamp())

    await newer.flush()
    await older.flush()

    assert await _last_used_at(runtime, key) == moment + timedelta(minutes=5)


async def test_a_refused_use_does_not_set_last_used_at(runtime: Runtime, tenant: Tenant) -> None:
    recorder = _recorder(runtime)
    recorder.record(
        tenant.admin_key_id,
        tenant.organization_id,
        "GET /x",
        Outcome.REVOKED,
        _recent_moment().timestamp(),
    )

    await recorder.flush()

    assert await _last_used_at(runtime, tenant.admin_key_id) is None


SHORT_RETENTION = {
    Granularity.MINUTE: timedelta(hours=1),
    Granularity.HOUR: timedelta(days=2),
    Granularity.DAY: timedelta(days=30),
}


async def test_uses_older_than_a_granularitys_retention_are_not_written_to_it(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime, retention=SHORT_RETENTION)
    now = datetime.now(UTC).replace(microsecond=0)
    hours_ago, days_ago = now - timedelta(hours=3), now - timedelta(days=5)
    key, org = tenant.admin_key_id, tenant.organization_id
    recorder.record(key, org, "GET /x", Outcome.VALID, hours_ago.timestamp())
    recorder.record(key, org, "GET /y", Outcome.VALID, days_ago.timestamp())

    await recorder.flush()

    assert await _stored(runtime) == {
        ("HOUR", _hour_start(hours_ago), key, "GET /x", "VALID"): 1,
        ("DAY", _day_start(hours_ago), key, "GET /x", "VALID"): 1,
        ("DAY", _day_start(days_ago), key, "GET /y", "VALID"): 1,
    }


async def test_prune_deletes_the_buckets_older_than_their_retention(
    runtime: Runtime, tenant: Tenant
) -> None:
    keeps_everything = _recorder(runtime, retention={})
    now = datetime.now(UTC).replace(microsecond=0)
    recent, hours_ago, days_ago = (
        now - timedelta(minutes=10),
        now - timedelta(hours=3),
        now - timedelta(days=5),
    )
    key, org = tenant.admin_key_id, tenant.organization_id
    for moment, operation in ((recent, "GET /r"), (hours_ago, "GET /h"), (days_ago, "GET /d")):
        keeps_everything.record(key, org, operation, Outcome.VALID, moment.timestamp())
    await keeps_everything.flush()

    deleted = await _recorder(runtime, retention=SHORT_RETENTION).prune()

    assert deleted == 3  # the minute buckets of 3 hours and 5 days ago, the hour bucket of 5 days
    assert await _stored(runtime) == {
        **_every_granularity(recent, key, "GET /r", "VALID", 1),
        ("HOUR", _hour_start(hours_ago), key, "GET /h", "VALID"): 1,
        ("DAY", _day_start(hours_ago), key, "GET /h", "VALID"): 1,
        ("DAY", _day_start(days_ago), key, "GET /d", "VALID"): 1,
    }


async def test_a_buffer_reaching_max_buckets_is_flushed_without_waiting_for_the_interval(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime, max_buckets=3)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    recorder.record(key, org, "GET /a", Outcome.VALID, moment.timestamp())
    recorder.record(key, org, "GET /b", Outcome.VALID, moment.timestamp())
    assert recorder._early_flush is None

    recorder.record(key, org, "GET /c", Outcome.VALID, moment.timestamp())
    early_flush = recorder._early_flush
    assert early_flush is not None
    await early_flush

    assert recorder.pending_buckets == 0
    assert await _stored(runtime) == {
        **_every_granularity(moment, key, "GET /a", "VALID", 1),
        **_every_granularity(moment, key, "GET /b", "VALID", 1),
        **_every_granularity(moment, key, "GET /c", "VALID", 1),
    }


UNATTRIBUTABLE = [
    pytest.param("kh_not-a-real-key", "MALFORMED", id="malformed"),
    pytest.param(generate_secret("kh"), "UNKNOWN", id="unknown"),
]


@pytest.mark.parametrize(("key", "reason"), UNATTRIBUTABLE)
async def test_an_unattributable_rejection_is_not_recorded_for_any_organization(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, key: str, reason: str
) -> None:
    response = await client.post("/v1/keys/verify", json={"key": key, "operation": "GET /x"})
    assert response.json()["code"] == reason

    await runtime.recorder.flush()

    assert runtime.recorder.pending_buckets == 0
    assert await _stored(runtime) == {}


def _rejections_metric(metrics_text: str, reason: str) -> float:
    pattern = rf'^keyhouse_key_rejections_total\{{reason="{reason}"\}} (\S+)$'
    found = re.search(pattern, metrics_text, re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


@pytest.mark.parametrize(("key", "reason"), UNATTRIBUTABLE)
async def test_an_unattributable_rejection_is_counted_per_reason_in_process_metrics(
    client: httpx.AsyncClient, key: str, reason: str
) -> None:
    before = _rejections_metric((await client.get("/metrics")).text, reason)

    for _ in range(2):
        await client.post("/v1/keys/verify", json={"key": key})

    after = _rejections_metric((await client.get("/metrics")).text, reason)
    assert after - before == 2


async def test_a_forward_auth_use_is_labelled_with_its_method_and_path_without_the_query(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    headers = {
        "X-Original-Method": "POST",
        "X-Original-URI": f"/charge-points/42?key={tenant.admin_key}&output=json",
    }
    response = await client.get("/v1/auth", headers=headers)
    assert response.status_code == 200

    await runtime.recorder.flush()

    operations = {operation for _, _, _, operation, _ in await _stored(runtime)}
    assert operations == {"POST /charge-points/42"}
