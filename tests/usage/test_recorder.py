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
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from app.auth.outcomes import Outcome
from app.auth.presentation import Presentation
from app.auth.principal import Caller
from app.auth.secret import generate_secret
from app.config import Settings
from app.keys import revocation as keys_revocation
from app.kit.db import create_engine, create_sessionmaker, session_scope
from app.models.keys import ApiKey
from app.models.usage import Granularity, OrganizationUsage, UsageBucket
from app.runtime import Runtime
from app.usage.recorder import UsageRecorder
from app.usage.service import usage_retention
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
        await keys_revocation.revoke_key(session, caller, retired.id, broadcast=runtime.broadcast)
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
    pattern = rf'^keyhouse_verifications_total\{{outcome="{reason}"\}} (\S+)$'
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
    assert operations == {"POST /charge-points/{id}"}


# --- a bucket the database refuses never stops the others -------------------------------------

# Labels no database column may hold: PostgreSQL refuses a NUL in text, SQLite's driver a lone
# surrogate (it cannot encode it as UTF-8). The boundary cleans labels before they reach the
# recorder; these are injected past it, as a future caller that forgot the boundary would.
UNSTORABLE_LABELS = [
    pytest.param("GET /x\x00y", id="nul"),
    pytest.param("graphql:Q\udc00", id="lone-surrogate"),
    pytest.param("GET /\x1b[31mred", id="escape"),
]


def _refused_metric(metrics_text: str) -> float:
    found = re.search(r"^keyhouse_usage_refused_uses_total (\S+)$", metrics_text, re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


async def _metrics_text(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def _organization_totals(runtime: Runtime, organization_id: str) -> dict[str, int]:
    """Stored uses of one organization per granularity, from the organization-wide table."""
    table = OrganizationUsage.metadata.tables["organization_usage"]
    statement = (
        select(table.c.granularity, func.sum(table.c["count"]))
        .where(table.c.organization_id == organization_id)
        .group_by(table.c.granularity)
    )
    async with runtime.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {granularity: int(total) for granularity, total in rows}


@pytest.mark.parametrize("label", UNSTORABLE_LABELS)
async def test_an_unstorable_label_is_set_aside_and_every_other_bucket_is_written(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    label: str,
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    refused_before = _refused_metric(await _metrics_text(client))
    recorder.record(
        tenant.admin_key_id, tenant.organization_id, label, Outcome.VALID, moment.timestamp()
    )
    for _ in range(200):
        recorder.record(
            other_tenant.admin_key_id,
            other_tenant.organization_id,
            "GET /x",
            Outcome.VALID,
            moment.timestamp(),
        )

    await recorder.flush()

    assert await _stored(runtime) == _every_granularity(
        moment, other_tenant.admin_key_id, "GET /x", "VALID", 200
    )
    assert await _organization_totals(runtime, other_tenant.organization_id) == {
        "MINUTE": 200,
        "HOUR": 200,
        "DAY": 200,
    }
    assert await _organization_totals(runtime, tenant.organization_id) == {}
    assert recorder.pending_buckets == 0
    assert list(recorder.refused_buckets.values()) == [1]
    assert _refused_metric(await _metrics_text(client)) - refused_before == 1


async def test_a_refused_bucket_is_not_retried_and_later_flushes_write_everything_else(
    runtime: Runtime, tenant: Tenant, other_tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    recorder.record(key, org, "GET /x\x00y", Outcome.VALID, moment.timestamp())
    await recorder.flush()
    recorder.record(key, org, "GET /x\x00y", Outcome.VALID, moment.timestamp())
    recorder.record(key, org, "GET /ok", Outcome.VALID, moment.timestamp())
    other = other_tenant.admin_key_id, other_tenant.organization_id
    recorder.record(*other, "GET /x", Outcome.VALID, moment.timestamp())

    with count_statements(runtime.engine) as statements:
        await recorder.flush()
    await recorder.flush()  # nothing left to write: the refused bucket is not tried again

    assert await _stored(runtime) == {
        **_every_granularity(moment, key, "GET /ok", "VALID", 1),
        **_every_granularity(moment, other[0], "GET /x", "VALID", 1),
    }
    assert sum(recorder.refused_buckets.values()) == 2
    assert not any("\x00" in str(statement) for statement in statements.statements)
    refusals = [record for record in caplog.records if "refused" in record.getMessage()]
    assert len(refusals) == 2  # once per flush that set something aside
    assert "\x00" not in caplog.text


async def test_a_bucket_the_database_itself_refuses_is_found_and_set_aside(
    runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    # A key id no database accepts (longer than its column on PostgreSQL, not encodable as
    # UTF-8 on SQLite) passes the recorder's own label check: only the database can refuse it.
    recorder = _recorder(runtime)
    moment = _recent_moment()
    unstorable_key = "key_\udc00" + "x" * 40
    recorder.record(
        unstorable_key, tenant.organization_id, "GET /x", Outcome.VALID, moment.timestamp()
    )
    good_keys = [f"key_{number:03d}" for number in range(300)]
    for key_id in good_keys:
        recorder.record(
            key_id, other_tenant.organization_id, "GET /x", Outcome.VALID, moment.timestamp()
        )

    await recorder.flush()

    stored = await _stored(runtime)
    assert {key_id for _, _, key_id, _, _ in stored} == set(good_keys)
    assert set(stored.values()) == {1}
    assert await _organization_totals(runtime, other_tenant.organization_id) == {
        "MINUTE": 300,
        "HOUR": 300,
        "DAY": 300,
    }
    assert await _organization_totals(runtime, tenant.organization_id) == {}
    assert list(recorder.refused_buckets) == [
        (int(moment.timestamp() // 60), unstorable_key, tenant.organization_id, "GET /x", "VALID")
    ]


async def test_a_graceful_stop_writes_every_good_use_beside_a_poisoned_one(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    # Through the running service: the poisoned label goes straight into its recorder.
    moment = _recent_moment()
    runtime.recorder.record(
        tenant.admin_key_id,
        tenant.organization_id,
        "GET /x\x00y",
        Outcome.VALID,
        moment.timestamp(),
    )
    for _ in range(200):
        response = await client.post(
            "/v1/keys/verify", json={"key": other_tenant.admin_key, "operation": "GET /x"}
        )
        assert response.json()["valid"] is True

    await runtime.stop()

    totals = await _totals_per_granularity(runtime)
    expected = Counter({(other_tenant.admin_key_id, "GET /x", "VALID"): 200})
    assert totals == {"MINUTE": expected, "HOUR": expected, "DAY": expected}


# --- a key's distinct labels per hour are capped -----------------------------------------------


def _labels_by_granularity(stored: dict[BucketId, int], key_id: str) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {g.value: set() for g in Granularity}
    for granularity, _, stored_key, operation, _ in stored:
        if stored_key == key_id:
            labels[granularity].add(operation)
    return labels


async def test_100000_distinct_labels_store_at_most_the_cap_and_every_use_is_counted(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    assert runtime.settings.usage_max_labels_per_key_hour == 1000  # the default
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    for number in range(100_000):
        recorder.record(key, org, f"GET /poi/{number}", Outcome.VALID, moment.timestamp())

    await recorder.flush()

    stored = await _stored(runtime)
    for granularity, labels in _labels_by_granularity(stored, key).items():
        assert len(labels) == 1000 + 1, granularity  # the first 1,000 and the overflow label
        assert "(other)" in labels
    totals = await _totals_per_granularity(runtime)
    for granularity in Granularity:
        assert sum(totals[granularity.value].values()) == 100_000
        assert totals[granularity.value][(key, "(other)", "VALID")] == 99_000


async def test_the_cap_holds_across_flushes_within_the_hour(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    for flush in range(3):
        for number in range(600):
            operation = f"GET /poi/{flush}-{number}"
            recorder.record(key, org, operation, Outcome.VALID, moment.timestamp())
        await recorder.flush()

    hour_labels = _labels_by_granularity(await _stored(runtime), key)["HOUR"]
    assert len(hour_labels) == 1000 + 1
    totals = await _totals_per_granularity(runtime)
    assert totals["HOUR"][(key, "(other)", "VALID")] == 3 * 600 - 1000


async def test_a_label_counted_before_the_cap_keeps_its_own_bucket_after_it(
    runtime: Runtime, tenant: Tenant
) -> None:
    recorder = UsageRecorder(
        runtime.sessionmaker, flush_interval_seconds=3600, max_labels_per_key_hour=2
    )
    moment = _recent_moment()
    key, org, at = tenant.admin_key_id, tenant.organization_id, moment.timestamp()
    for operation in ("GET /a", "GET /b", "GET /c", "GET /a", "GET /d"):
        recorder.record(key, org, operation, Outcome.VALID, at)
    recorder.record(key, org, "GET /b", Outcome.RATE_LIMITED, at)

    await recorder.flush()

    assert await _stored(runtime) == {
        **_every_granularity(moment, key, "GET /a", "VALID", 2),
        **_every_granularity(moment, key, "GET /b", "VALID", 1),
        **_every_granularity(moment, key, "GET /b", "RATE_LIMITED", 1),
        **_every_granularity(moment, key, "(other)", "VALID", 2),
    }


async def test_each_key_and_each_hour_has_a_cap_of_its_own(
    runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    recorder = UsageRecorder(
        runtime.sessionmaker, flush_interval_seconds=3600, max_labels_per_key_hour=1
    )
    moment = _recent_moment()
    next_hour = moment + timedelta(hours=1)
    key, org = tenant.admin_key_id, tenant.organization_id
    other = other_tenant.admin_key_id, other_tenant.organization_id
    recorder.record(key, org, "GET /a", Outcome.VALID, moment.timestamp())
    recorder.record(key, org, "GET /b", Outcome.VALID, moment.timestamp())
    recorder.record(*other, "GET /b", Outcome.VALID, moment.timestamp())
    recorder.record(key, org, "GET /b", Outcome.VALID, next_hour.timestamp())

    await recorder.flush()

    stored = await _stored(runtime)
    minute_labels = {
        (start, key_id, operation)
        for granularity, start, key_id, operation, _ in stored
        if granularity == "MINUTE"
    }
    assert minute_labels == {
        (_minute_start(moment), key, "GET /a"),
        (_minute_start(moment), key, "(other)"),
        (_minute_start(moment), other[0], "GET /b"),
        (_minute_start(next_hour), key, "GET /b"),
    }


async def test_a_database_that_stops_answering_sets_nothing_aside(
    runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _recorder(runtime)
    moment = _recent_moment()
    key, org = tenant.admin_key_id, tenant.organization_id
    recorder.record(key, org, "GET /x", Outcome.VALID, moment.timestamp())

    async def locked(*_args: object) -> None:
        raise OperationalError("INSERT ...", {}, Exception("database is locked"))

    with monkeypatch.context() as patch:
        patch.setattr(recorder, "_write_counts", locked)
        with pytest.raises(OperationalError):
            await recorder.flush()
    assert recorder.refused_buckets == {}
    await recorder.flush()  # the database answers again

    assert await _stored(runtime) == _every_granularity(moment, key, "GET /x", "VALID", 1)
