"""Records key uses in memory and writes them to the database in batches.

Verification sits on every request of the provider's API, so it never writes to the database:
it adds one to an in-memory counter (a dict increment) and a background task flushes every few
seconds, when the buffer grows large, and on shutdown. Each flush adds its counts to the minute,
hour and day buckets in one transaction with additive upserts, so several instances can flush the
same bucket without losing counts, and ``last_used_at`` costs at most one write per key per flush.

What a crash (kill -9) can lose: the uses recorded since the last flush, at most one flush
interval's worth. A flush that fails (database briefly unavailable) keeps its counts for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import SessionMaker
from app.keys.models import ApiKey
from app.keys.outcomes import Outcome
from app.usage.models import BUCKET_KEY, OPERATION_MAX_LENGTH, Granularity, UsageBucket

logger = logging.getLogger(__name__)

# (minute number since the epoch, key id, organization id, operation, outcome)
BucketKey = tuple[int, str, str, str, str]
UPSERT_CHUNK = 20_000
# The upsert's parameters, in the order of the compiled statement (the table's columns).
ROW_COLUMNS = (
    "granularity",
    "bucket_start",
    "api_key_id",
    "organization_id",
    "operation",
    "outcome",
    "count",
)
PRUNE_EVERY_SECONDS = 3600.0


def _primary_key_order(bucket: BucketKey) -> tuple[str, int, str, str, str]:
    start, key_id, organization_id, operation, outcome = bucket
    return organization_id, start, key_id, operation, outcome


class UsageRecorder:
    def __init__(
        self,
        sessionmaker: SessionMaker,
        *,
        flush_interval_seconds: float,
        max_buckets: int = 50_000,
        retention: dict[Granularity, timedelta] | None = None,
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

    def record(
        self, key_id: str, organization_id: str, operation: str, outcome: Outcome, at: float
    ) -> None:
        """Count one use of a key (any outcome attributable to it). Never does I/O."""
        # Outcome is a str enum: the member itself is the key (no .value lookup on the hot path).
        self._counts[(int(at // 60), key_id, organization_id, operation, outcome)] += 1
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
            counts, self._counts = self._counts, defaultdict(int)
            last_used, self._last_used = self._last_used, {}
            try:
                async with self._sessionmaker() as session:
                    connection = await session.connection()
                    await self._write_counts(connection, counts)
                    await self._write_last_used(connection, last_used)
                    await session.commit()
            except Exception:
                # Put back what could not be written; the next flush tries again.
                for bucket, count in counts.items():
                    self._counts[bucket] += count
                for key_id, at in last_used.items():
                    if at > self._last_used.get(key_id, 0.0):
                        self._last_used[key_id] = at
                logger.exception(
                    "usage flush failed; keeping %d buckets for the next attempt", len(counts)
                )
                raise

    def _rows(
        self, counts: dict[BucketKey, int], bucket_start: Callable[[datetime], Any]
    ) -> Iterable[tuple[Any, ...]]:
        """The minute, hour and day rows of ``counts``, each granularity in one canonical order,
        with ``bucket_start`` already converted for the driver by ``bucket_start``.

        Every instance writes its rows in the same order, the primary key's (BUCKET_KEY): two
        flushes of the same buckets that took their row locks in opposite orders would deadlock
        on PostgreSQL, and rows in key order land next to each other in SQLite's B-tree.
        """
        now = time.time()
        for granularity in Granularity:
            per_minute = granularity.seconds // 60
            retained = self._retention.get(granularity)
            oldest = -1 if retained is None else int((now - retained.total_seconds()) // 60)
            # Older than this granularity keeps: it would be pruned at once.
            if per_minute == 1:
                merged = {bucket: n for bucket, n in counts.items() if bucket[0] >= oldest}
            else:
                merged = defaultdict(int)
                for (minute, key_id, org_id, operation, outcome), count in counts.items():
                    if minute >= oldest:
                        start = minute - minute % per_minute
                        merged[(start, key_id, org_id, operation, outcome)] += count
            name = granularity.value
            starts: dict[int, Any] = {}
            for bucket in sorted(merged, key=_primary_key_order):
                start, key_id, org_id, operation, outcome = bucket
                when = starts.get(start)
                if when is None:
                    when = starts[start] = bucket_start(datetime.fromtimestamp(start * 60, UTC))
                # In ROW_COLUMNS order.
                yield (
                    name,
                    when,
                    key_id,
                    org_id,
                    operation[:OPERATION_MAX_LENGTH],
                    str(outcome),
                    merged[bucket],
                )

    async def _write_counts(
        self, connection: AsyncConnection, counts: dict[BucketKey, int]
    ) -> None:
        if not counts:
            return
        table: Table = UsageBucket.metadata.tables["usage_buckets"]
        dialect = connection.dialect
        insert = postgresql.insert(table) if dialect.name == "postgresql" else sqlite.insert(table)
        # count = count + excluded.count: concurrent flushes of one bucket add up.
        statement = insert.on_conflict_do_update(
            index_elements=list(BUCKET_KEY),
            set_={"count": table.c["count"] + insert.excluded["count"]},
        )
        # Hundreds of thousands of rows per flush: SQLAlchemy's per-row parameter processing
        # cost as much as the database's work. The statement is compiled once and its rows go to
        # the driver as tuples, the bucket start converted by the column type's own bind
        # processor once per distinct start (benchmarks/usage.py).
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup != list(ROW_COLUMNS):
            raise RuntimeError(f"unexpected upsert parameters: {compiled.positiontup}")
        column_type = table.c.bucket_start.type.dialect_impl(dialect)
        convert = column_type.bind_processor(dialect) or (lambda value: value)
        rows = list(self._rows(counts, convert))
        for offset in range(0, len(rows), UPSERT_CHUNK):
            await connection.exec_driver_sql(str(compiled), rows[offset : offset + UPSERT_CHUNK])

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
        """Delete buckets older than their granularity's retention; returns how many."""
        now = now or datetime.now(UTC)
        table = UsageBucket.metadata.tables["usage_buckets"]
        deleted = 0
        async with self._sessionmaker() as session:
            for granularity, kept in self._retention.items():
                result = await session.exec(
                    delete(table).where(
                        table.c.granularity == granularity.value,
                        table.c.bucket_start < now - kept,
                    )
                )
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
