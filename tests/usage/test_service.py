"""Sums over a range read the coarsest buckets that cover it exactly, and agree with the series."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.auth.outcomes import Outcome
from app.auth.principal import Caller
from app.kit.db import session_scope
from app.models.usage import Granularity
from app.runtime import Runtime
from app.usage import service
from app.usage.service import UsageQuery, tiles
from tests.support import Tenant, count_statements

DAY, HOUR, MINUTE = Granularity.DAY, Granularity.HOUR, Granularity.MINUTE


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_whole_days_of_an_hour_range_come_from_day_buckets() -> None:
    query = UsageQuery(at("2026-10-01 13:00"), at("2026-10-04 05:30"), HOUR)

    assert tiles(query) == [
        (DAY, at("2026-10-02 00:00"), at("2026-10-04 00:00")),
        (HOUR, at("2026-10-01 13:00"), at("2026-10-02 00:00")),
        # The bucket 05:00 starts before `to` (05:30): it is part of the range, as in the series.
        (HOUR, at("2026-10-04 00:00"), at("2026-10-04 06:00")),
    ]


def test_a_minute_range_reads_whole_hours_from_hour_buckets() -> None:
    query = UsageQuery(at("2026-10-01 13:58"), at("2026-10-01 16:02"), MINUTE)

    assert tiles(query) == [
        (HOUR, at("2026-10-01 14:00"), at("2026-10-01 16:00")),
        (MINUTE, at("2026-10-01 13:58"), at("2026-10-01 14:00")),
        (MINUTE, at("2026-10-01 16:00"), at("2026-10-01 16:02")),
    ]


@pytest.mark.parametrize(
    ("start", "end", "granularity"),
    [
        ("2026-10-01 13:00", "2026-10-01 20:00", HOUR),  # no whole day inside
        ("2026-10-01 00:00", "2026-10-03 00:00", DAY),  # nothing coarser than a day
        ("2026-10-01 13:58", "2026-10-01 14:30", MINUTE),  # no whole hour inside
    ],
)
def test_a_range_without_a_whole_coarser_bucket_is_read_as_asked(
    start: str, end: str, granularity: Granularity
) -> None:
    query = UsageQuery(at(start), at(end), granularity)

    assert tiles(query) == [(granularity, at(start), at(end))]


async def test_totals_and_breakdowns_equal_the_sum_of_the_series(
    runtime: Runtime, tenant: Tenant
) -> None:
    # Uses over the last two days, at random minutes, with two operations and two outcomes.
    generator = random.Random(20261123)
    # The last noon, not the clock: where midnight falls in the ranges below decides whether
    # they hold a whole day, so the same draws read the same buckets at any time of day.
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    if now > datetime.now(UTC):
        now -= timedelta(days=1)
    for _ in range(600):
        moment = now - timedelta(minutes=generator.randrange(1, 2 * 24 * 60))
        runtime.recorder.record(
            tenant.admin_key_id,
            tenant.organization_id,
            generator.choice(["GET /a", "GET /b"]),
            generator.choice([Outcome.VALID, Outcome.RATE_LIMITED]),
            moment.timestamp(),
        )
    await runtime.recorder.flush()
    caller = Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)
    coarser_read: set[Granularity] = set()

    for granularity, span in ((HOUR, timedelta(hours=47)), (MINUTE, timedelta(hours=23))):
        for _ in range(5):
            start = now - span + timedelta(minutes=generator.randrange(0, 60))
            end = start + timedelta(
                minutes=generator.randrange(61, int(span.total_seconds() // 60))
            )
            query = UsageQuery(service.floor_to(start, granularity), end, granularity)
            coarser_read.update(tile[0] for tile in tiles(query) if tile[0] is not granularity)
            async with session_scope(runtime.sessionmaker) as session:
                series = await service.series(session, caller, query)
                totals = await service.totals(session, caller, query)
                by_operation = await service.by_operation(session, caller, query, first=10)
                by_outcome = await service.by_outcome(session, caller, query)

            expected = sum(point.counts.requests for point in series)
            assert totals.requests == expected, (granularity, start, end)
            assert totals.valid == sum(point.counts.valid for point in series)
            assert sum(share.counts.requests for share in by_operation) == expected
            assert sum(share.counts.requests for share in by_outcome) == expected
    assert coarser_read == {DAY, HOUR}, "some ranges were read from coarser buckets"


async def test_by_key_sums_each_keys_totals_and_agrees_with_the_buckets(
    runtime: Runtime, tenant: Tenant
) -> None:
    # Three keys, used under several operations and outcomes over the last 36 hours.
    generator = random.Random(20261201)
    now = datetime.now(UTC)
    key_ids = [tenant.admin_key_id, "key_" + "b" * 22, "key_" + "c" * 22]
    for _ in range(900):
        runtime.recorder.record(
            generator.choice(key_ids),
            tenant.organization_id,
            generator.choice(["GET /a", "GET /b", "POST /c"]),
            generator.choice([Outcome.VALID, Outcome.RATE_LIMITED, Outcome.REVOKED]),
            (now - timedelta(minutes=generator.randrange(1, 36 * 60))).timestamp(),
        )
    await runtime.recorder.flush()
    caller = Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)
    query = UsageQuery(service.floor_to(now - timedelta(hours=40), HOUR), now, HOUR)

    with count_statements(runtime.engine) as log:
        async with session_scope(runtime.sessionmaker) as session:
            by_key = await service.by_key(session, caller, query, first=10)
    async with session_scope(runtime.sessionmaker) as session:
        per_key = {
            key_id: await service.totals(session, caller, replace(query, api_key_id=key_id))
            for key_id in key_ids
        }

    # One statement, over each key's totals (a row per key and bucket), not over every
    # operation and outcome's bucket.
    (statement,) = [s for s in log.statements if "key_usage" in s or "usage_buckets" in s]
    assert "key_usage" in statement
    assert "usage_buckets" not in statement
    expected = sorted(per_key.items(), key=lambda item: (-item[1].requests, item[0]))
    assert [(share.label, share.counts) for share in by_key] == expected
    assert sum(counts.requests for counts in per_key.values()) == 900


async def test_by_key_for_one_operation_or_outcome_reads_the_buckets(
    runtime: Runtime, tenant: Tenant
) -> None:
    now = datetime.now(UTC)
    for operation, outcome in (("GET /a", Outcome.VALID), ("GET /b", Outcome.REVOKED)):
        runtime.recorder.record(
            tenant.admin_key_id, tenant.organization_id, operation, outcome, now.timestamp()
        )
    await runtime.recorder.flush()
    caller = Caller(tenant.organization_id, runtime.catalogue.names(), tenant.admin_key_id)
    day = UsageQuery(service.floor_to(now, DAY), now + timedelta(seconds=1), DAY)

    with count_statements(runtime.engine) as log:
        async with session_scope(runtime.sessionmaker) as session:
            one_operation = await service.by_key(
                session, caller, replace(day, operation="GET /b"), first=10
            )
            one_outcome = await service.by_key(
                session, caller, replace(day, outcome=Outcome.VALID), first=10
            )

    assert [(s.label, s.counts.requests) for s in one_operation] == [(tenant.admin_key_id, 1)]
    assert [(s.label, s.counts.valid) for s in one_outcome] == [(tenant.admin_key_id, 1)]
    assert all("key_usage" not in s for s in log.statements)
