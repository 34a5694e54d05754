"""Records key uses in memory and writes them to the database in batches.

Verification sits on every request of the provider's API, so it never writes to the database:
it adds one to an in-memory counter (a dict increment) and a background task flushes every few
seconds, when the buffer grows large, and on shutdown. Each flush adds its counts to the minute,
hour and day buckets in one transaction with additive upserts, so several instances can flush the
same bucket without losing counts, and ``last_used_at`` costs at most one write per key per flush.

What a crash (kill -9) can lose: the uses recorded since the last flush, at most one flush
interval's worth. A flush that fails (database briefly unavailable) keeps its counts for the next.

One bad bucket never stops the others: a label no database may hold is set aside before the
write, and when the database refuses a flush anyway, the flush writes its buckets again in
halves, down to the single buckets it refuses, which are set aside too (logged, counted in
``/metrics``, never retried: retrying a refused row would fail every flush after it).

Each key counts at most ``max_labels_per_key_hour`` distinct labels per hour, the rest under
:data:`~app.kit.labels.OVERFLOW_LABEL`, so no caller grows the usage tables faster than keys x
outcomes x that cap. The labels seen are kept in this process's memory: with N instances a key
can reach N times the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.outcomes import Outcome
from app.kit.boundary import excerpt, value_problem
from app.kit.db import SessionMaker
from app.kit.labels import OPERATION_MAX_LENGTH, OVERFLOW_LABEL
from app.metrics import USAGE_FLUSH_DURATION, USAGE_FLUSH_FAILURES, USAGE_REFUSED
from app.models.keys import ApiKey
from app.models.usage import (
    BUCKET_KEY,
    KEY_USAGE_KEY,
    ORGANIZATION_KEY,
    Granularity,
    KeyUsage,
    OrganizationUsage,
    UsageBucket,
)

logger = logging.getLogger(__name__)

# (minute number since the epoch, key id, organization id, operation, outcome)
BucketKey = tuple[int, str, str, str, str]
Item = TypeVar("Item")
UPSERT_CHUNK = 20_000
PRUNE_EVERY_SECONDS = 3600.0
DEFAULT_MAX_LABELS_PER_KEY_HOUR = 1000
# Refused buckets kept in memory for an operator to look at; past this many they are only
# counted, so a stream of refused rows cannot grow the process.
REFUSED_KEPT = 10_000
# SQLSTATE classes of a database that is busy or going away rather than refusing a row:
# connection exceptions, rollbacks (deadlock, serialization), resources, operator intervention.
# A write failing this way is retried by a later flush, never set aside.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


class _Upsert:
    """An additive upsert (``count = count + excluded.count``, for each counted column:
    concurrent flushes of one bucket add up) into one usage table, its rows sent to the driver
    as tuples.

    Hundreds of thousands of rows per flush: SQLAlchemy's per-row parameter processing cost as
    much as the database's work. The statement is compiled once, rows are tuples in its
    parameter order (the table's columns, checked here), and ``bucket_start`` converts a bucket
    start with the column type's own bind processor, once per distinct start
    (benchmarks/usage.py).
    """

    def __init__(self, connection: AsyncConnection, table: Table, key: Sequence[str]) -> None:
        dialect = connection.dialect
        insert = postgresql.insert(table) if dialect.name == "postgresql" else sqlite.insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=list(key),
            set_={
                column.name: column + insert.excluded[column.name]
                for column in table.columns
                if column.name not in key
            },
        )
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup != [column.name for column in table.columns]:
            raise RuntimeError(f"unexpected upsert parameters: {compiled.positiontup}")
        self._connection = connection
        self._sql = str(compiled)
        column_type = table.c.bucket_start.type.dialect_impl(dialect)
        self.bucket_start: Callable[[datetime], Any] = column_type.bind_processor(dialect) or (
            lambda value: value
        )

    async def write(self, rows: list[tuple[Any, ...]]) -> None:
        for offset in range(0, len(rows), UPSERT_CHUNK):
            await self._connection.exec_driver_sql(self._sql, rows[offset : offset + UPSERT_CHUNK])


def _primary_key_order(bucket: BucketKey) -> tuple[str, int, str, str, str]:
    start, key_id, organization_id, operation, outcome = bucket
    return organization_id, start, key_id, operation, outcome


def _is_transient(error: BaseException) -> bool:
    """Whether a failed write says the database is unavailable rather than that it refuses the
    rows (SQLite reports a locked or unreadable file as an operational error)."""
    if isinstance(error, OSError | TimeoutError | OperationalError | InterfaceError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


def _why_refused(error: BaseException) -> str:
    """One line about a refusal, for the log: the driver's message, first line, excerpted (it
    may quote the refused value; statement parameters are hidden by the engine)."""
    message = str(getattr(error, "orig", None) or error).splitlines() or [""]
    return f"{type(error).__name__}: {excerpt(message[0])}"


async def _write_isolating(
    connection: AsyncConnection,
    items: list[Item],
    write: Callable[[list[Item]], Awaitable[None]],
) -> dict[Item, str]:
    """``write`` the items in savepoints, halving each part the database refuses down to the
    single items it refuses; returns those, with why. A refused item among n costs about
    2 x log2(n) more writes, of shrinking size."""
    refused: dict[Item, str] = {}
    parts = [items]
    while parts:
        part = parts.pop()
        problem = await _refusal_of(connection, write, part)
        if problem is None:
            continue
        if len(part) == 1:
            refused[part[0]] = problem
        else:
            middle = len(part) // 2
            parts.extend((part[middle:], part[:middle]))
    return refused


async def _refusal_of(
    connection: AsyncConnection, write: Callable[[list[Item]], Awaitable[None]], part: list[Item]
) -> str | None:
    """None when ``part`` was written; why not when the database refused it. Any other failure
    (the database stopped answering) is raised, so that nothing is set aside for it."""
    savepoint = await connection.begin_nested()
    try:
        await write(part)
    except Exception as error:
        if _is_transient(error):
            raise
        await savepoint.rollback()
        # Still answering after the failure: it was these rows the database refused.
        await connection.exec_driver_sql("SELECT 1")
        return _why_refused(error)
    await savepoint.commit()
    return None


def _unstorable(counts: Mapping[BucketKey, int]) -> dict[BucketKey, str]:
    """Buckets whose label no database column should hold (see app.kit.boundary), with why. Labels
    reach the recorder cleaned; this keeps one that did not from failing the flush."""
    refused: dict[BucketKey, str] = {}
    for bucket in counts:
        problem = value_problem(bucket[3][:OPERATION_MAX_LENGTH])
        if problem is not None:
            refused[bucket] = f"its label {problem}"
    return refused


class UsageRecorder:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        *,
        flush_interval_seconds: float,
        max_buckets: int = 50_000,
        retention: dict[Granularity, timedelta] | None = None,
        max_labels_per_key_hour: int = DEFAULT_MAX_LABELS_PER_KEY_HOUR,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = flush_interval_seconds
        self._max_buckets = max_buckets
        self._retention = retention or {}
        self._counts: defaultdict[BucketKey, int] = defaultdict(int)
        # key id -> Unix time of its latest successful authentication, not yet written.
        self._last_used: dict[str, float] = {}
        self._flush_lock = asyncio.Lock()
        self._early_flush: asyncio.Task[None] | None = None
        self._last_prune = 0.0
        self._max_labels = max_labels_per_key_hour
        # (key id, hour since the epoch) -> the labels its uses were counted under. Kept across
        # flushes for the hour; past hours are forgotten by the flush.
        self._labels: defaultdict[tuple[str, int], set[str]] = defaultdict(set)
        self._refused: dict[BucketKey, int] = {}

    def record(
        self, key_id: str, organization_id: str, operation: str, outcome: Outcome, at: float
    ) -> None:
        """Count one use of a key (any outcome attributable to it). Never does I/O."""
        minute = int(at // 60)
        labels = self._labels[(key_id, minute // 60)]
        if operation not in labels:
            if len(labels) < self._max_labels:
                labels.add(operation)
            else:
                operation = OVERFLOW_LABEL
        # Outcome is a str enum: the member itself is the key (no .value lookup on the hot path).
        self._counts[(minute, key_id, organization_id, operation, outcome)] += 1
        # The latest use wins even if the wall clock stepped back between two uses.
        if outcome is Outcome.VALID and at > self._last_used.get(key_id, 0.0):
            self._last_used[key_id] = at
        if len(self._counts) >= self._max_buckets and self._early_flush is None:
            self._early_flush = asyncio.get_running_loop().create_task(self._flush_early())

    def pending_last_used(self, key_id: str) -> datetime | None:
        at = self._last_used.get(key_id)
        return None if at is None else datetime.fromtimestamp(at, UTC)

    @property
    def pending_buckets(self) -> int:
        return len(self._counts)

    def oldest_pending_minute(self) -> int | None:
        """The minute (since the epoch) of the oldest use waiting for a flush, if any: for the
        metrics, read when they are scraped (a walk over the waiting buckets)."""
        return min((bucket[0] for bucket in self._counts), default=None)

    @property
    def refused_buckets(self) -> Mapping[BucketKey, int]:
        """Buckets set aside because they could not be stored, with their uses (the first
        :data:`REFUSED_KEPT`; ``/metrics`` counts them all)."""
        return dict(self._refused)

    async def _flush_early(self) -> None:
        try:
            await self.flush()
        except Exception:  # noqa: S110 - logged by flush; counts are kept for the next one
            pass
        finally:
            self._early_flush = None

    async def flush(self) -> None:
        async with self._flush_lock:
            if not self._counts and not self._last_used:
                return
            started = time.perf_counter()
            counts, self._counts = self._counts, defaultdict(int)
            last_used, self._last_used = self._last_used, {}
            refused = _unstorable(counts)
            storable = {b: n for b, n in counts.items() if b not in refused} if refused else counts
            try:
                refused.update(await self._write(storable, last_used))
            except Exception:
                USAGE_FLUSH_FAILURES.inc()
                # Put back what could not be written; the next flush tries again.
                for bucket, count in storable.items():
                    self._counts[bucket] += count
                for key_id, at in last_used.items():
                    if at > self._last_used.get(key_id, 0.0):
                        self._last_used[key_id] = at
                logger.exception(
                    "usage flush failed; keeping %d buckets for the next attempt", len(storable)
                )
                raise
            finally:
                self._forget_past_hours()
            USAGE_FLUSH_DURATION.observe(time.perf_counter() - started)
            if refused:
                self._set_aside(refused, counts)

    async def _write(
        self, counts: dict[BucketKey, int], last_used: dict[str, float]
    ) -> dict[BucketKey, str]:
        """Write the counts and ``last_used_at``; returns the buckets the database refused, with
        why. One transaction in the common case; a refusal costs a second, isolating, one."""
        try:
            await self._write_transaction(counts, last_used, isolating=False)
            return {}
        except Exception as error:
            if _is_transient(error):
                raise
        return await self._write_transaction(counts, last_used, isolating=True)

    async def _write_transaction(
        self, counts: dict[BucketKey, int], last_used: dict[str, float], *, isolating: bool
    ) -> dict[BucketKey, str]:
        refused: dict[BucketKey, str] = {}
        async with self._sessionmaker() as session:
            connection = await session.connection()
            if not isolating:
                await self._write_counts(connection, counts)
                await self._write_last_used(connection, last_used)
            else:

                async def write_counts(part: list[BucketKey]) -> None:
                    await self._write_counts(
                        connection, {bucket: counts[bucket] for bucket in part}
                    )

                async def write_last_used(part: list[str]) -> None:
                    await self._write_last_used(connection, {key: last_used[key] for key in part})

                refused = await _write_isolating(
                    connection, sorted(counts, key=_primary_key_order), write_counts
                )
                unknown = await _write_isolating(connection, sorted(last_used), write_last_used)
                if unknown:
                    logger.error("last_used_at of %d keys refused, not retried", len(unknown))
            await session.commit()
        return refused

    def _set_aside(self, refused: dict[BucketKey, str], counts: dict[BucketKey, int]) -> None:
        uses = sum(counts[bucket] for bucket in refused)
        USAGE_REFUSED.inc(uses)
        for bucket in refused:
            if bucket in self._refused or len(self._refused) < REFUSED_KEPT:
                self._refused[bucket] = self._refused.get(bucket, 0) + counts[bucket]
        (_, key_id, _, operation, _), why = next(iter(refused.items()))
        logger.error(
            "usage flush refused %d buckets (%d uses): set aside, not retried; the first is key"
            " %s, operation %r: %s",
            len(refused),
            uses,
            key_id,
            excerpt(operation),
            why,
        )

    def _forget_past_hours(self) -> None:
        """Drop the labels of hours before the previous one. Uses are recorded as they happen,
        so only the newest hour still grows; the one before stays for a clock stepping back."""
        hours = {hour for _, hour in self._labels}
        if len(hours) <= 2:
            return
        oldest = max(hours) - 1
        self._labels = defaultdict(
            set, {key: seen for key, seen in self._labels.items() if key[1] >= oldest}
        )

    def _by_granularity(
        self, counts: dict[BucketKey, int]
    ) -> Iterator[tuple[Granularity, dict[BucketKey, int]]]:
        """``counts`` merged into each granularity's buckets, without those older than the
        granularity's retention (they would be pruned at once)."""
        now = time.time()
        for granularity in Granularity:
            per_minute = granularity.seconds // 60
            retained = self._retention.get(granularity)
            oldest = -1 if retained is None else int((now - retained.total_seconds()) // 60)
            if per_minute == 1:
                yield (
                    granularity,
                    {bucket: n for bucket, n in counts.items() if bucket[0] >= oldest},
                )
                continue
            merged: defaultdict[BucketKey, int] = defaultdict(int)
            for (minute, key_id, org_id, operation, outcome), count in counts.items():
                if minute >= oldest:
                    start = minute - minute % per_minute
                    merged[(start, key_id, org_id, operation, outcome)] += count
            yield granularity, merged

    async def _write_counts(
        self, connection: AsyncConnection, counts: dict[BucketKey, int]
    ) -> None:
        """Add the counts to the key buckets, to each key's totals and to the organization-wide
        buckets.

        Rows are written in their table's primary-key order, the same on every instance: two
        flushes of the same buckets that took their row locks in opposite orders would deadlock
        on PostgreSQL, and rows in key order land next to each other in SQLite's B-tree.
        """
        if not counts:
            return
        buckets = _Upsert(connection, UsageBucket.metadata.tables["usage_buckets"], BUCKET_KEY)
        keys = _Upsert(connection, KeyUsage.metadata.tables["key_usage"], KEY_USAGE_KEY)
        organizations = _Upsert(
            connection, OrganizationUsage.metadata.tables["organization_usage"], ORGANIZATION_KEY
        )
        bucket_rows: list[tuple[Any, ...]] = []
        key_rows: list[tuple[Any, ...]] = []
        organization_rows: list[tuple[Any, ...]] = []
        starts: dict[int, Any] = {}

        def start_value(start: int) -> Any:
            when = starts.get(start)
            if when is None:
                when = starts[start] = buckets.bucket_start(datetime.fromtimestamp(start * 60, UTC))
            return when

        for granularity, merged in self._by_granularity(counts):
            name = granularity.value
            per_key: defaultdict[tuple[str, int, str], list[int]] = defaultdict(lambda: [0, 0])
            per_organization: defaultdict[tuple[str, int, str], int] = defaultdict(int)
            for bucket in sorted(merged, key=_primary_key_order):
                start, key_id, org_id, operation, outcome = bucket
                count = merged[bucket]
                # In the column order of usage_buckets (_Upsert checks it).
                bucket_rows.append(
                    (
                        name,
                        start_value(start),
                        key_id,
                        org_id,
                        operation[:OPERATION_MAX_LENGTH],
                        str(outcome),
                        count,
                    )
                )
                totals = per_key[(org_id, start, key_id)]
                totals[0] += count
                totals[1] += count if outcome == Outcome.VALID else 0
                per_organization[(org_id, start, str(outcome))] += count
            for org_id, start, key_id in sorted(per_key):
                requests, valid = per_key[(org_id, start, key_id)]
                key_rows.append((org_id, name, start_value(start), key_id, requests, valid))
            for org_id, start, outcome in sorted(per_organization):
                organization_rows.append(
                    (
                        org_id,
                        name,
                        start_value(start),
                        outcome,
                        per_organization[(org_id, start, outcome)],
                    )
                )
        await buckets.write(bucket_rows)
        await keys.write(key_rows)
        await organizations.write(organization_rows)

    async def _write_last_used(
        self, connection: AsyncConnection, last_used: dict[str, float]
    ) -> None:
        if not last_used:
            return
        keys = ApiKey.metadata.tables["api_keys"]
        statement = (
            update(keys)
            .where(keys.c.id == bindparam("key_id"))
            # The latest use wins, also when several instances flush the same key.
            .where(or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < bindparam("used_at")))
            .values(last_used_at=bindparam("used_at"))
        )
        await connection.execute(
            statement,
            [
                {"key_id": key_id, "used_at": datetime.fromtimestamp(at, UTC)}
                for key_id, at in sorted(last_used.items())  # canonical lock order, as above
            ],
        )

    async def prune(self, now: datetime | None = None) -> int:
        """Delete buckets older than their granularity's retention; returns how many key
        buckets went (each key's totals and the organization-wide buckets go with them)."""
        now = now or datetime.now(UTC)
        buckets = UsageBucket.metadata.tables["usage_buckets"]
        rollups = (
            KeyUsage.metadata.tables["key_usage"],
            OrganizationUsage.metadata.tables["organization_usage"],
        )
        deleted = 0
        async with self._sessionmaker() as session:
            for granularity, kept in self._retention.items():
                for table in (buckets, *rollups):
                    result = await session.exec(
                        delete(table).where(
                            table.c.granularity == granularity.value,
                            table.c.bucket_start < now - kept,
                        )
                    )
                    if table is buckets:
                        deleted += result.rowcount or 0
            await session.commit()
        return deleted

    async def run(self) -> None:
        """Flush every interval (and prune hourly) until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            # A failed flush is logged and its counts kept; the loop must survive it.
            with contextlib.suppress(Exception):
                await self.flush()
            if time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
                self._last_prune = time.monotonic()
                try:
                    await self.prune()
                except Exception:
                    logger.exception("usage retention pruning failed; will retry in an hour")
