"""Usage analytics: ingest through the real recorder and flush, then ``usage`` against a plain
GROUP BY over one row per use.

    .venv/bin/python benchmarks/usage.py            # 10 million uses, a few minutes
    .venv/bin/python benchmarks/usage.py --uses 500000 --keep --db /tmp/usage.db

1. A fresh SQLite file, migrated; 50 organizations of 20 keys created through the services.
2. Uses spread over the last 30 days in time order: keys drawn from a Zipf-like distribution
   (rank r weighs 1/r^1.1), three operation labels per key (60/30/10 %), 95 % VALID. They go
   through ``UsageRecorder.record(key_id, organization_id, operation, outcome, at)`` of a started
   ``Runtime``: its own early flush (``usage_flush_max_buckets``), its periodic flush (every
   ``usage_flush_interval_seconds`` of wall clock) and an explicit flush every chunk of uses
   (every 1.5 simulated days) write them. The ingest rate is wall clock of recording plus every
   flush; generating the uses is not counted.
3. The same uses, one row each, in ``raw_uses(at, organization_id, api_key_id, operation,
   outcome)`` of the same file (``at`` in Unix seconds), indexed on (organization_id, at).
4. For the biggest organization: totals, series, byKey(10), byOperation(10) and byOutcome,
   over 30 days by HOUR and over 24 hours by MINUTE, through the ``app.usage.service``
   functions (with a ``Caller``, ranges checked by ``check_query``, one session per run), and
   the same five questions as GROUP BYs over ``raw_uses`` through the stdlib ``sqlite3`` module
   (time truncated to the bucket, as keyhouse does). Both must give the same numbers.

Retention stays at the defaults (minute buckets 72 hours): uses older than that are written
to hour and day buckets only, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.auth.outcomes import Outcome  # noqa: E402
from app.auth.principal import Caller  # noqa: E402
from app.config import Settings  # noqa: E402
from app.keys import schemas as keys_schemas  # noqa: E402
from app.keys import service as keys_service  # noqa: E402
from app.kit.db import session_scope  # noqa: E402
from app.migrate import upgrade_to_head  # noqa: E402
from app.models.usage import Granularity, UsageBucket  # noqa: E402
from app.organizations.service import OrganizationCreated, create_organization  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.usage import service as usage_service  # noqa: E402
from app.usage.recorder import UsageRecorder  # noqa: E402
from app.usage.service import usage_retention  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "usage.json"

ORGANIZATIONS = 50
KEYS_PER_ORGANIZATION = 20
DAYS = 30
DEFAULT_USES = 10_000_000
ZIPF_EXPONENT = 1.1
CHUNK = 500_000  # uses generated (and then recorded) at a time
TURN = 2_000  # uses recorded between two turns of the event loop, as between two requests
RUNS = 30
RAW_BUDGET_SECONDS = 120.0  # per raw question; at least MIN_RAW_RUNS runs whatever it costs
MIN_RAW_RUNS = 5
SEED = 20261122

OPERATIONS = [
    "GET /charge-points",
    "GET /charge-points/{id}",
    "POST /sessions",
    "GET /sessions",
    "GET /invoices",
    "GET /tariffs",
    "graphql:Dashboard",
    "graphql:KeysPage",
]
OPERATION_SHARES = (0.6, 0.9, 1.0)  # cumulative: 60 %, 30 %, 10 % of a key's uses
OUTCOMES = (
    (Outcome.VALID, 0.95),
    (Outcome.RATE_LIMITED, 0.02),
    (Outcome.INSUFFICIENT_SCOPE, 0.015),
    (Outcome.REVOKED, 0.01),
    (Outcome.EXPIRED, 0.005),
)

TARGET_INGEST = 200_000  # uses per second
TARGET_HOUR_P50_MS = 50.0
TARGET_SPEEDUP = 20.0

# (at, organization_id, api_key_id, operation, outcome)
Use = tuple[float, str, str, str, Outcome]


@dataclass(frozen=True)
class Key:
    id: str
    organization_id: str
    operations: tuple[str, str, str]


@dataclass
class WriteLog:
    """What the flushes sent to the database (counted with a SQLAlchemy event)."""

    upsert_statements: int = 0
    upsert_rows: int = 0
    last_used_statements: int = 0

    def listen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("INSERT INTO usage_buckets"):
            self.upsert_statements += 1
            self.upsert_rows += len(parameters) if isinstance(parameters, list) else 1
        elif statement.startswith("UPDATE api_keys SET last_used_at"):
            self.last_used_statements += 1


@dataclass
class Timings:
    runs_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.runs_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


# --- setup ---------------------------------------------------------------------------------


async def create_keys(runtime: Runtime, rng: random.Random) -> list[Key]:
    """50 organizations of 20 keys (the admin key and 19 more), through the services."""
    keys: list[Key] = []
    settings = runtime.settings
    for number in range(ORGANIZATIONS):
        async with session_scope(runtime.sessionmaker) as session:
            created = await create_organization(
                session,
                f"Organization {number:02d}",
                catalogue=runtime.catalogue,
                key_prefix=settings.key_prefix,
                broadcast=runtime.broadcast,
            )
            assert isinstance(created, OrganizationCreated)
            organization_id = created.organization.id
            ids = [created.admin_key.api_key.id]
            caller = Caller(organization_id, runtime.catalogue.names())
            for index in range(1, KEYS_PER_ORGANIZATION):
                key = await keys_service.create_key(
                    session,
                    caller,
                    keys_schemas.KeyCreate(name=f"key-{index:02d}", scopes=["read:charge_points"]),
                    catalogue=runtime.catalogue,
                    key_prefix=settings.key_prefix,
                    broadcast=runtime.broadcast,
                )
                assert isinstance(key, keys_schemas.KeyCreated), key
                ids.append(key.api_key.id)
        for key_id in ids:
            first, second, third = rng.sample(OPERATIONS, 3)
            keys.append(Key(key_id, organization_id, (first, second, third)))
    return keys


class UseStream:
    """The same uses, in time order, chunk by chunk (deterministic: seeded)."""

    def __init__(self, keys: Sequence[Key], total: int, end: float, rng: random.Random) -> None:
        self.total = total
        self.start = end - DAYS * 86_400
        self.step = (end - self.start) / total
        self._rng = rng
        self._by_rank = list(keys)
        rng.shuffle(self._by_rank)  # which key is the heaviest user is chance, as in real life
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(keys) + 1)]
        self._key_cumulative = list(_cumulative(weights))
        self._outcomes = [outcome for outcome, _ in OUTCOMES]
        self._outcome_cumulative = list(_cumulative([share for _, share in OUTCOMES]))

    def chunks(self) -> Any:
        rng = self._rng
        for low in range(0, self.total, CHUNK):
            high = min(self.total, low + CHUNK)
            size = high - low
            keys = rng.choices(self._by_rank, cum_weights=self._key_cumulative, k=size)
            slots = rng.choices((0, 1, 2), cum_weights=OPERATION_SHARES, k=size)
            outcomes = rng.choices(self._outcomes, cum_weights=self._outcome_cumulative, k=size)
            start, step = self.start, self.step
            yield [
                (
                    start + (low + offset) * step,
                    key.organization_id,
                    key.id,
                    key.operations[slot],
                    o,
                )
                for offset, (key, slot, o) in enumerate(zip(keys, slots, outcomes, strict=True))
            ]


def _cumulative(weights: Sequence[float]) -> Any:
    total = 0.0
    for weight in weights:
        total += weight
        yield total


RAW_TABLE = (
    "CREATE TABLE raw_uses (at REAL NOT NULL, organization_id TEXT NOT NULL, "
    "api_key_id TEXT NOT NULL, operation TEXT NOT NULL, outcome TEXT NOT NULL)"
)


def create_raw_table(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(RAW_TABLE)
    return connection


def insert_raw(connection: sqlite3.Connection, uses: list[Use]) -> None:
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO raw_uses VALUES (?, ?, ?, ?, ?)",
        [(at, org, key, operation, outcome.value) for at, org, key, operation, outcome in uses],
    )
    connection.execute("COMMIT")


# --- ingest --------------------------------------------------------------------------------


@dataclass
class Ingest:
    uses: int = 0
    seconds: float = 0.0
    raw_seconds: float = 0.0
    raw_index_seconds: float = 0.0
    per_organization: Counter[str] = field(default_factory=Counter)


async def ingest(
    runtime: Runtime, stream: UseStream, raw: sqlite3.Connection, progress: Callable[[str], None]
) -> Ingest:
    recorder = runtime.recorder
    result = Ingest()
    for uses in stream.chunks():
        result.per_organization.update(organization_id for _, organization_id, *_ in uses)
        started = time.perf_counter()
        record = recorder.record
        for low in range(0, len(uses), TURN):
            for at, organization_id, key_id, operation, outcome in uses[low : low + TURN]:
                record(key_id, organization_id, operation, outcome, at)
            # A server's event loop runs other tasks between requests: here the recorder's
            # early flush (started by record() when the buffer is full) and its periodic flush.
            await asyncio.sleep(0)
        # An explicit flush every chunk (1.5 simulated days); it also waits for a flush still
        # running, so that the synchronous raw insert below never meets an open transaction.
        await recorder.flush()
        result.seconds += time.perf_counter() - started
        result.uses += len(uses)

        started = time.perf_counter()
        insert_raw(raw, uses)
        result.raw_seconds += time.perf_counter() - started
        progress(
            f"  {result.uses:>11,} uses  ingest {result.uses / result.seconds:>9,.0f}/s  "
            f"raw insert {result.uses / result.raw_seconds:>9,.0f}/s"
        )
    started = time.perf_counter()
    raw.execute("CREATE INDEX ix_raw_uses_org_at ON raw_uses (organization_id, at)")
    raw.execute("ANALYZE")
    result.raw_index_seconds = time.perf_counter() - started
    return result


# --- queries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The five questions' answers, to check that both sides agree."""

    totals: tuple[int, int]
    series: dict[str, tuple[int, int]]  # non-zero points only
    by_key: list[int]
    by_operation: list[tuple[str, int]]
    by_outcome: dict[str, int]


async def usage_answer(runtime: Runtime, caller: Caller, query: usage_service.UsageQuery) -> Answer:
    async with runtime.sessionmaker() as session:
        totals = await usage_service.totals(session, caller, query)
        series = await usage_service.series(session, caller, query)
        by_key = await usage_service.by_key(session, caller, query, first=10)
        by_operation = await usage_service.by_operation(session, caller, query, first=10)
        by_outcome = await usage_service.by_outcome(session, caller, query)
    return Answer(
        totals=(totals.requests, totals.valid),
        series={
            point.start.strftime("%Y-%m-%dT%H:%M"): (point.counts.requests, point.counts.valid)
            for point in series
            if point.counts.requests
        },
        by_key=[share.counts.requests for share in by_key],
        by_operation=[(share.label, share.counts.requests) for share in by_operation],
        by_outcome={share.label: share.counts.requests for share in by_outcome},
    )


# A use's bucket is the start of the minute (hour) it happened in, truncated as keyhouse's
# recorder does (``int(at // 60)``): whole seconds of ``at``, then whole buckets, all in integers.
# Not strftime(..., at, 'unixepoch'): SQLite rounds to the millisecond first, which put a use in
# the last half millisecond of a minute in the next minute, and the check failed with keyhouse
# right (:func:`check_minute_edge`).
RAW_SERIES = (
    "SELECT (CAST(at AS INTEGER) / :seconds) * :seconds AS bucket, COUNT(*), "
    "SUM(outcome = 'VALID') FROM raw_uses "
    "WHERE organization_id = :organization_id AND at >= :start AND at < :end GROUP BY bucket"
)
RAW_TOTALS = (
    "SELECT COUNT(*), SUM(outcome = 'VALID') FROM raw_uses "
    "WHERE organization_id = ? AND at >= ? AND at < ?"
)
RAW_BY_KEY = (
    "SELECT api_key_id, COUNT(*) AS n FROM raw_uses "
    "WHERE organization_id = ? AND at >= ? AND at < ? "
    "GROUP BY api_key_id ORDER BY n DESC, api_key_id LIMIT 10"
)
RAW_BY_OPERATION = (
    "SELECT operation, COUNT(*) AS n FROM raw_uses "
    "WHERE organization_id = ? AND at >= ? AND at < ? "
    "GROUP BY operation ORDER BY n DESC, operation LIMIT 10"
)
RAW_BY_OUTCOME = (
    "SELECT outcome, COUNT(*) AS n FROM raw_uses "
    "WHERE organization_id = ? AND at >= ? AND at < ? GROUP BY outcome ORDER BY n DESC"
)


def raw_answer(
    connection: sqlite3.Connection, caller: Caller, query: usage_service.UsageQuery
) -> Answer:
    where = (caller.organization_id, query.start.timestamp(), query.end.timestamp())
    ((requests, valid),) = connection.execute(RAW_TOTALS, where).fetchall()
    series = connection.execute(
        RAW_SERIES, _series_parameters(caller.organization_id, *where[1:], query.granularity)
    ).fetchall()
    by_key = connection.execute(RAW_BY_KEY, where).fetchall()
    by_operation = connection.execute(RAW_BY_OPERATION, where).fetchall()
    by_outcome = connection.execute(RAW_BY_OUTCOME, where).fetchall()
    return Answer(
        totals=(requests, valid or 0),
        series={_bucket_name(start): (count, ok) for start, count, ok in series},
        by_key=[count for _, count in by_key],
        by_operation=[(operation, count) for operation, count in by_operation],
        by_outcome={outcome: count for outcome, count in by_outcome},
    )


def _series_parameters(
    organization_id: str, start: float, end: float, granularity: Granularity
) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "start": start,
        "end": end,
        "seconds": granularity.seconds,
    }


def _bucket_name(start: int | float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M")


# 2025-12-01 11:59:59.9997 UTC: in the last half millisecond of 11:59, which SQLite's
# strftime(..., 'unixepoch') rounds up to 12:00:00.000.
MINUTE_EDGE = 1764590399.9997
MINUTE_EDGE_BUCKET = "2025-12-01T11:59"


def check_minute_edge(runtime: Runtime) -> None:
    """A use at :data:`MINUTE_EDGE` counts in 11:59 on both sides: in keyhouse's recorder and in
    the reference's GROUP BY. Else the comparison could fail without keyhouse being wrong."""
    recorder = UsageRecorder(runtime.sessionmaker, flush_interval_seconds=3600)
    recorder.record("key", "organization", "GET /x", Outcome.VALID, MINUTE_EDGE)
    keyhouse = [_bucket_name(minute * 60) for minute, *_ in recorder._counts]
    raw = sqlite3.connect(":memory:")
    try:
        raw.execute(RAW_TABLE)
        raw.execute(
            "INSERT INTO raw_uses VALUES (?, 'organization', 'key', 'GET /x', 'VALID')",
            (MINUTE_EDGE,),
        )
        parameters = _series_parameters("organization", 0, 2**32, Granularity.MINUTE)
        reference = [_bucket_name(row[0]) for row in raw.execute(RAW_SERIES, parameters)]
    finally:
        raw.close()
    assert keyhouse == reference == [MINUTE_EDGE_BUCKET], (keyhouse, reference)


async def timed_async(runs: int, call: Callable[[], Awaitable[Answer]]) -> tuple[Timings, Answer]:
    answer = await call()  # warm-up (and the answer to compare)
    timings = Timings()
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        timings.runs_ms.append((time.perf_counter() - started) * 1000)
    return timings, answer


def timed_raw(call: Callable[[], Answer]) -> tuple[Timings, Answer]:
    answer = call()  # warm-up (and the answer to compare)
    timings = Timings()
    budget_end = time.perf_counter() + RAW_BUDGET_SECONDS
    while len(timings.runs_ms) < RUNS and (
        len(timings.runs_ms) < MIN_RAW_RUNS or time.perf_counter() < budget_end
    ):
        started = time.perf_counter()
        call()
        timings.runs_ms.append((time.perf_counter() - started) * 1000)
    return timings, answer


@dataclass
class Comparison:
    name: str
    usage: Timings
    raw: Timings
    agree: bool
    requests: int

    @property
    def speedup(self) -> float:
        return self.raw.p50 / self.usage.p50


async def compare(
    runtime: Runtime,
    raw: sqlite3.Connection,
    caller: Caller,
    name: str,
    granularity: Granularity,
    span: timedelta,
) -> Comparison:
    now = datetime.now(UTC)
    query = usage_service.check_query(
        usage_service.UsageQuery(start=now - span, end=now, granularity=granularity),
        retention=usage_retention(runtime.settings)[granularity],
        now=now,
    )
    usage_timings, usage_result = await timed_async(
        RUNS, lambda: usage_answer(runtime, caller, query)
    )
    raw_timings, raw_result = timed_raw(lambda: raw_answer(raw, caller, query))
    agree = usage_result == raw_result
    if not agree:
        print(f"  !! {name}: the answers differ", file=sys.stderr)
        print(f"     usage {usage_result.totals} {usage_result.by_outcome}", file=sys.stderr)
        print(f"     raw   {raw_result.totals} {raw_result.by_outcome}", file=sys.stderr)
    return Comparison(name, usage_timings, raw_timings, agree, usage_result.totals[0])


# --- report --------------------------------------------------------------------------------


async def bucket_rows(runtime: Runtime) -> dict[str, int]:
    table = UsageBucket.metadata.tables["usage_buckets"]
    statement = select(table.c.granularity, func.count()).group_by(table.c.granularity)
    async with runtime.engine.connect() as connection:
        return {row[0]: int(row[1]) for row in await connection.execute(statement)}


def _hours(span: timedelta) -> int:
    return int(span.total_seconds() // 3600)


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


async def run(uses: int, database: Path) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    if load_at_start > 0.5:
        print(f"note: load average {load_at_start} at start; other work skews the figures")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database}")
    runtime = Runtime.create(settings)
    check_minute_edge(runtime)
    await upgrade_to_head(runtime.engine)
    rng = random.Random(SEED)
    print(f"setup: {ORGANIZATIONS} organizations x {KEYS_PER_ORGANIZATION} keys in {database}")
    keys = await create_keys(runtime, rng)
    raw = create_raw_table(database)

    writes = WriteLog()
    event.listen(runtime.engine.sync_engine, "before_cursor_execute", writes.listen)
    await runtime.start()  # the recorder's periodic flush runs as in production
    stream = UseStream(keys, uses, time.time(), rng)
    retention = usage_retention(settings)
    print(
        f"ingest: {uses:,} uses over {DAYS} days through UsageRecorder.record + flush "
        f"(flush every {settings.usage_flush_interval_seconds:g} s, early flush at "
        f"{settings.usage_flush_max_buckets:,} buckets; default retention kept: minute buckets "
        f"{_hours(retention[Granularity.MINUTE])} h, so older uses are written to hour and day "
        "buckets only)"
    )
    ingested = await ingest(runtime, stream, raw, print)
    buckets = await bucket_rows(runtime)
    organization_id, organization_uses = ingested.per_organization.most_common(1)[0]
    caller = Caller(organization_id, runtime.catalogue.names())
    print(f"queries: biggest organization {organization_id} ({organization_uses:,} uses)")
    hour = await compare(
        runtime, raw, caller, "30 days by HOUR", Granularity.HOUR, timedelta(days=30)
    )
    minute = await compare(
        runtime, raw, caller, "24 hours by MINUTE", Granularity.MINUTE, timedelta(hours=24)
    )
    await runtime.stop()
    ((pages, page_size),) = raw.execute(
        "SELECT page_count, page_size FROM pragma_page_count, pragma_page_size"
    ).fetchall()
    size_gb = pages * page_size / 1e9
    raw.close()

    ingest_rate = ingested.uses / ingested.seconds
    checks = {
        "ingest": ingest_rate >= TARGET_INGEST,
        "hour_p50": hour.usage.p50 <= TARGET_HOUR_P50_MS,
        "hour_speedup": hour.speedup >= TARGET_SPEEDUP,
        "answers_agree": hour.agree and minute.agree,
    }
    rows = [
        ("measure", "figure", "target", "result"),
        (
            "ingest, recorder + flushes (wall clock)",
            f"{ingest_rate:,.0f} uses/s ({ingested.seconds:.1f} s)",
            f">= {TARGET_INGEST:,} uses/s",
            verdict(checks["ingest"]),
        ),
    ]
    for comparison in (hour, minute):
        rows += [
            (
                f"usage {comparison.name}, p50 / p95",
                f"{comparison.usage.p50:.1f} / {comparison.usage.p95:.1f} ms "
                f"({len(comparison.usage.runs_ms)} runs)",
                f"p50 <= {TARGET_HOUR_P50_MS:g} ms" if comparison is hour else "-",
                verdict(checks["hour_p50"]) if comparison is hour else "-",
            ),
            (
                f"raw GROUP BY {comparison.name}, p50 / p95",
                f"{comparison.raw.p50:,.1f} / {comparison.raw.p95:,.1f} ms "
                f"({len(comparison.raw.runs_ms)} runs)",
                "-",
                "-",
            ),
            (
                f"speed-up {comparison.name} (p50)",
                f"{comparison.speedup:,.1f}x",
                f">= {TARGET_SPEEDUP:g}x" if comparison is hour else "-",
                verdict(checks["hour_speedup"]) if comparison is hour else "-",
            ),
        ]
    rows.append(
        (
            "same numbers from both (totals, series, breakdowns)",
            f"{hour.requests:,} and {minute.requests:,} requests",
            "equal",
            verdict(checks["answers_agree"]),
        )
    )
    print()
    print_table(rows)
    print()
    print(
        f"  writes: {writes.upsert_rows:,} bucket upserts in {writes.upsert_statements:,} "
        f"statements, {writes.last_used_statements:,} last_used_at updates (one per flush); "
        f"buckets stored: {', '.join(f'{g} {n:,}' for g, n in sorted(buckets.items()))}"
    )
    print(
        f"  raw table: {ingested.uses:,} rows inserted at "
        f"{ingested.uses / ingested.raw_seconds:,.0f} rows/s, index built in "
        f"{ingested.raw_index_seconds:.1f} s; database file {size_gb:.2f} GB"
    )
    return {
        "environment": {
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "load_average_at_start": load_at_start,
        },
        "data": {
            "uses": ingested.uses,
            "organizations": ORGANIZATIONS,
            "keys": len(keys),
            "days": DAYS,
            "zipf_exponent": ZIPF_EXPONENT,
            "valid_share": OUTCOMES[0][1],
            "biggest_organization_uses": organization_uses,
            "retention_hours": {g.value: _hours(span) for g, span in retention.items()},
            "buckets_stored": buckets,
        },
        "ingest": {
            "uses_per_second": round(ingest_rate),
            "seconds": round(ingested.seconds, 2),
            "bucket_upserts": writes.upsert_rows,
            "upsert_statements": writes.upsert_statements,
            "flushes_with_last_used": writes.last_used_statements,
            "raw_rows_per_second": round(ingested.uses / ingested.raw_seconds),
            "raw_index_seconds": round(ingested.raw_index_seconds, 2),
        },
        "queries": {
            "how": "app.usage.service functions with a Caller (one session per run) vs "
            "GROUP BY over raw_uses through sqlite3",
            **{
                comparison.name: {
                    "usage_ms": {
                        "p50": round(comparison.usage.p50, 2),
                        "p95": round(comparison.usage.p95, 2),
                        "runs": len(comparison.usage.runs_ms),
                    },
                    "raw_ms": {
                        "p50": round(comparison.raw.p50, 2),
                        "p95": round(comparison.raw.p95, 2),
                        "runs": len(comparison.raw.runs_ms),
                    },
                    "speedup_p50": round(comparison.speedup, 1),
                    "answers_agree": comparison.agree,
                    "requests": comparison.requests,
                }
                for comparison in (hour, minute)
            },
        },
        "targets": {
            "ingest_uses_per_second": TARGET_INGEST,
            "hour_30_days_p50_ms": TARGET_HOUR_P50_MS,
            "hour_30_days_speedup": TARGET_SPEEDUP,
        },
        "checks": {name: verdict(passed) for name, passed in checks.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--uses", type=int, default=DEFAULT_USES)
    parser.add_argument("--db", type=Path, help="SQLite file to create (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the database file")
    arguments = parser.parse_args()
    directory = None
    if arguments.db is None:
        directory = Path(tempfile.mkdtemp(prefix="keyhouse-usage-"))
        database = directory / "usage.db"
    else:
        database = arguments.db
        if database.exists():
            parser.error(f"{database} exists; the benchmark needs a fresh file")
    try:
        report = asyncio.run(run(arguments.uses, database))
    finally:
        if directory is not None and not arguments.keep:
            shutil.rmtree(directory, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    shown = RESULTS.relative_to(ROOT) if RESULTS.is_relative_to(ROOT) else RESULTS
    print(f"\n  written to {shown}")
    return 0 if all(value == "PASS" for value in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
