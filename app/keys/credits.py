"""Credits: a number of uses sold with a key, spent exactly, whichever instance answers.

Spending is the one step of verification that may not be answered from an instance's memory:
two instances each holding "5 left" would sell 10. So a spend is one atomic step in the shared
store that says how many are left:

- **With Redis** (``KEYHOUSE_REDIS_URL``), one Lua script per spend: it refills a balance from an
  earlier period, spends if enough is left, and answers, in one step. The balances are written
  back to the database in batches (every few seconds and at shutdown), never per request; the
  write-back only ever lowers a balance within a period, so instances writing back out of order
  leave the lowest, which is Redis's.
- **Without Redis** (one process), one conditional ``UPDATE ... RETURNING`` in the database per
  spend, for keys with credits only: the one exception to "no database write per request".

A balance belongs to a refill period (``2026-12-01`` daily, ``2026-12`` monthly, ``''`` without
refill). The first spend in a later period resets it to the refill amount: a refill resets, it
never accumulates, and no job or write is needed at the boundary. An update that sets the balance
bumps the key's ``credits_version``; a newer version replaces whatever Redis holds.

If Redis is configured but does not answer, a key with credits cannot be checked: it is answered
UNAVAILABLE (counting in process memory would sell the same credits on every instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis.asyncio as redis
from redis.exceptions import RedisError
from sqlalchemy import Boolean, Integer, String, and_, bindparam, case, or_, select, update
from sqlmodel import col

from app.kit.db import SessionMaker, execute_core, outages_as_unavailable
from app.kit.errors import Unavailable
from app.models.keys import ApiKey, RefillInterval

logger = logging.getLogger(__name__)

REMAINING_MAX = 1_000_000_000
COST_MAX = 1_000
REDIS_PREFIX = "keyhouse:credits:"


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """A key's credits as its row said when the key was cached."""

    remaining: int
    refill_amount: int | None
    refill_interval: RefillInterval | None
    period: str
    version: int

    @classmethod
    def of(cls, row: ApiKey) -> CreditTerms | None:
        if row.credits_remaining is None:
            return None
        interval = row.credits_refill_interval
        return cls(
            remaining=row.credits_remaining,
            refill_amount=row.credits_refill_amount,
            refill_interval=None if interval is None else RefillInterval(interval),
            period=row.credits_period or "",
            version=row.credits_version,
        )


def refill_period(interval: RefillInterval | None, now: datetime) -> str:
    """The period a moment belongs to; comparable as text within one interval."""
    if interval is None:
        return ""
    moment = now.astimezone(UTC)
    return f"{moment:%Y-%m-%d}" if interval is RefillInterval.DAILY else f"{moment:%Y-%m}"


def next_refill(interval: RefillInterval | None, now: datetime) -> datetime | None:
    """The next boundary (UTC midnight, or the first of next month), None without refill."""
    if interval is None:
        return None
    moment = now.astimezone(UTC)
    if interval is RefillInterval.DAILY:
        day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        return day.fromordinal(day.toordinal() + 1).replace(tzinfo=UTC)
    if moment.month == 12:
        return datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    return datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)


class CreditSpend(NamedTuple):
    spent: bool
    remaining: int
    refill_at: datetime | None


# KEYS[1]: the key's balance (a hash: r remaining, p period, v version).
# ARGV: version, remaining and period from the database, the current period, the refill amount
# (-1: none), the cost. A spend needs max(cost, 1) left: at 0 the key is refused, also to a
# request that would spend nothing.
_SPEND = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
local r, p
if v < tonumber(ARGV[1]) then
  v = tonumber(ARGV[1]); r = tonumber(ARGV[2]); p = ARGV[3]
else
  r = tonumber(redis.call('HGET', KEYS[1], 'r')); p = redis.call('HGET', KEYS[1], 'p')
end
local amount = tonumber(ARGV[5])
if amount >= 0 and p < ARGV[4] then r = amount; p = ARGV[4] end
local cost = tonumber(ARGV[6])
local spent = 0
if r >= math.max(cost, 1) then r = r - cost; spent = 1 end
redis.call('HSET', KEYS[1], 'r', r, 'p', p, 'v', v)
return {spent, r, p, v}
"""


def _refilled(column: Any) -> Any:
    """The balance as it stands in the current period: reset when it belongs to an earlier one."""
    return case(
        (
            and_(bindparam("refills", type_=Boolean()), col(ApiKey.credits_period) < _PERIOD),
            bindparam("amount", type_=Integer()),
        ),
        else_=column,
    )


_PERIOD = bindparam("period", type_=String())
_KEY_ID = bindparam("key_id", type_=String())
_REMAINING = col(ApiKey.credits_remaining)
# One statement per spend: refill if due, spend if enough is left, answer what is left.
_SPEND_IN_DATABASE = (
    update(ApiKey)
    .where(
        col(ApiKey.id) == _KEY_ID,
        _REMAINING.is_not(None),
        _refilled(_REMAINING) >= bindparam("need", type_=Integer()),
    )
    .values(
        credits_remaining=_refilled(_REMAINING) - bindparam("cost", type_=Integer()),
        credits_period=case(
            (bindparam("refills", type_=Boolean()), _PERIOD), else_=col(ApiKey.credits_period)
        ),
    )
    .returning(_REMAINING)
)
_BALANCE_IN_DATABASE = select(_refilled(_REMAINING)).where(col(ApiKey.id) == _KEY_ID)
# A write-back from Redis: only a lower balance in the same period, or a later period, and never
# over a balance an update set since (a newer version).
_WRITE_BACK = (
    update(ApiKey)
    .where(
        col(ApiKey.id) == _KEY_ID,
        col(ApiKey.credits_version) == bindparam("version", type_=Integer()),
        or_(
            col(ApiKey.credits_period) < _PERIOD,
            and_(
                col(ApiKey.credits_period) == _PERIOD,
                bindparam("remaining", type_=Integer()) < _REMAINING,
            ),
        ),
    )
    .values(credits_remaining=bindparam("remaining", type_=Integer()), credits_period=_PERIOD)
)


class CreditLedger:
    def __init__(self, sessionmaker: SessionMaker, redis_url: str | None) -> None:
        self._sessionmaker = sessionmaker
        self._redis: redis.Redis | None = None
        if redis_url:
            self._redis = redis.Redis.from_url(
                redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
            )
            self._script = self._redis.register_script(_SPEND)
        # Balances spent in Redis since the last write-back: key id -> (remaining, period,
        # version), the latest this instance saw.
        self._unwritten: dict[str, tuple[int, str, int]] = {}

    @property
    def in_redis(self) -> bool:
        return self._redis is not None

    async def spend(self, key_id: str, terms: CreditTerms, cost: int, now: datetime) -> CreditSpend:
        """Spend ``cost`` credits of the key, if that many are left (``cost`` 0: only check
        that the key is not exhausted). Raises Unavailable when the store does not answer."""
        period = refill_period(terms.refill_interval, now)
        refill_at = next_refill(terms.refill_interval, now)
        amount = terms.refill_amount if terms.refill_interval is not None else None
        if self._redis is None:
            return await self._spend_in_database(key_id, period, amount, cost, refill_at)
        try:
            spent, remaining, stored_period, version = await self._script(
                keys=[REDIS_PREFIX + key_id],
                args=[
                    terms.version,
                    terms.remaining,
                    terms.period,
                    period,
                    -1 if amount is None else amount,
                    cost,
                ],
            )
        except (RedisError, OSError) as error:
            raise Unavailable("The credit store is unavailable; retry in a few seconds.") from error
        if spent and cost:
            self._unwritten[key_id] = (int(remaining), _text(stored_period), int(version))
        return CreditSpend(bool(spent), int(remaining), refill_at)

    async def _spend_in_database(
        self, key_id: str, period: str, amount: int | None, cost: int, refill_at: datetime | None
    ) -> CreditSpend:
        values = {
            "key_id": key_id,
            "period": period,
            "refills": amount is not None,
            "amount": amount or 0,
            "cost": cost,
            "need": max(cost, 1),
        }
        with outages_as_unavailable():
            async with self._sessionmaker() as session:
                left = (await execute_core(session, _SPEND_IN_DATABASE, values)).scalar()
                if left is None:
                    left = (await execute_core(session, _BALANCE_IN_DATABASE, values)).scalar()
                    await session.rollback()
                    return CreditSpend(False, int(left or 0), refill_at)
                await session.commit()
        return CreditSpend(True, int(left), refill_at)

    async def write_back(self) -> None:
        """Write the balances spent in Redis to the database (a batch, not a write per use)."""
        if not self._unwritten:
            return
        batch, self._unwritten = self._unwritten, {}
        rows = [
            {"key_id": key_id, "remaining": remaining, "period": period, "version": version}
            for key_id, (remaining, period, version) in batch.items()
        ]
        try:
            async with self._sessionmaker() as session:
                await execute_core(session, _WRITE_BACK, rows)  # type: ignore[arg-type]
                await session.commit()
        except Exception:
            # Kept for the next attempt, unless a newer balance of the key came meanwhile.
            for key_id, balance in batch.items():
                self._unwritten.setdefault(key_id, balance)
            raise

    async def run(self, interval_seconds: float) -> None:
        """Write back periodically until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.write_back()
            except Exception as error:
                logger.warning("credit balances not written back, retrying: %r", error)

    async def close(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
