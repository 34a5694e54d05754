"""Per-key rate limits with the ``limits`` library: one budget per key, for all of its uses.

Fixed windows, as ``limits``' FixedWindowRateLimiter counts them (one increment per hit; the
window's expiry is its reset), but called on the storage directly with a key computed once per
cached key: the strategy object recomputes the storage key three times per hit, which was most
of the verification's cost.

Counters live in process memory by default, in :class:`LocalWindows`: the same fixed windows as
``limits``' MemoryStorage, without its per-key lock and expiry timer thread (an event loop has one
thread), which cost more than the rest of a cached verification (benchmarks/verify.py).

With Redis configured they live in Redis so that
every instance spends the same budget; if Redis stops answering, counting falls back to process
memory (each instance then enforces the limit on its own), says so once in the log and in
``/readyz``, and tries Redis again a few seconds later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple, cast

import redis.asyncio as redis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.errors import StorageError

logger = logging.getLogger(__name__)

REDIS_RETRY_SECONDS = 5.0


def rate_limit_item(requests: int, per_seconds: int) -> RateLimitItem:
    return RateLimitItemPerSecond(requests, per_seconds)


@dataclass(frozen=True, slots=True)
class Budget:
    """A key's limit and the storage key its counter lives under."""

    item: RateLimitItem
    counter: str

    @classmethod
    def of(cls, item: RateLimitItem, key_id: str) -> Budget:
        return cls(item, item.key_for(key_id))


class RateLimitStatus(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix time (seconds) when the current window ends
    # For a refused hit, whole seconds until the window ends (0 when allowed): read from the clock
    # once, so the hint and the Retry-After header always say the same.
    retry_after: int = 0

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class LocalWindows:
    """Fixed-window counters in process memory, for one event loop's thread.

    Each counter remembers when its window ends; a hit after that starts a new window. Ended
    windows are swept out once the table has grown by half since the last sweep, so memory
    stays proportional to the keys used within one window.
    """

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # counter -> (window end, hits)
        self._sweep_at = 1024

    def incr(self, counter: str, expiry: float) -> tuple[int, float]:
        """Count a hit; returns the hits in the current window and when the window ends."""
        now = time.time()
        window = self._windows.get(counter)
        if window is None or window[0] <= now:
            if len(self._windows) >= self._sweep_at:
                self._sweep(now)
            window = (now + expiry, 1)
        else:
            window = (window[0], window[1] + 1)
        self._windows[counter] = window
        return window[1], window[0]

    def _sweep(self, now: float) -> None:
        self._windows = {c: w for c, w in self._windows.items() if w[0] > now}
        self._sweep_at = max(1024, len(self._windows) * 3 // 2)

    def __len__(self) -> int:
        return len(self._windows)


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        # The in-memory counters are synchronous: no I/O, so no reason to pay for coroutines.
        self._local = LocalWindows()
        self._shared: RedisStorage | None = None
        if redis_url:
            self._shared = RedisStorage(
                redis_url.replace("redis://", "async+redis://", 1),
                implementation="redispy",
                wrap_exceptions=True,
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
            )
        self._shared_down_until = 0.0

    @property
    def backend(self) -> str:
        """``redis``, ``memory``, or ``memory (redis unavailable)`` while falling back."""
        if self._shared is None:
            return "memory"
        return "memory (redis unavailable)" if self._shared_down_until else "redis"

    async def hit(self, budget: Budget) -> RateLimitStatus:
        # Written against limits 5.8.0 (the storage's ``incr`` and ``get_expiry``, no strategy).
        item, counter = budget.item, budget.counter
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                count = await self._shared.incr(counter, item.get_expiry())
                reset = await self._shared.get_expiry(counter)
            except StorageError as exc:
                self._shared_unavailable(type(exc.storage_error).__name__)
            else:
                self._shared_available()
                return status_of(item, count, reset)
        count, reset = self._local.incr(counter, item.get_expiry())
        return status_of(item, count, reset)

    def shared_counter(self, budget: Budget) -> str | None:
        """The Redis key a budget's hits are counted under (None without Redis), for a caller
        that counts a hit in one round trip with work of its own, the way ``limits`` counts it
        (written against limits 5.8.0: its prefix, and INCRBY then EXPIRE on the first hit)."""
        if self._shared is None:
            return None
        return self._shared.bridge.prefixed_key(budget.counter)

    async def check(self) -> str:
        """Asks Redis now (readiness probes) and counts accordingly from here on; returns
        :attr:`backend`. The caller bounds the wait."""
        if self._shared is not None:
            if await self._shared.check():
                self._shared_available()
            else:
                self._shared_unavailable("no answer to PING")
        return self.backend

    def _shared_unavailable(self, reason: str) -> None:
        if not self._shared_down_until:
            logger.warning("rate limit storage unavailable, counting in process memory: %s", reason)
        self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS

    def _shared_available(self) -> None:
        if self._shared_down_until:
            logger.warning("rate limit storage reachable again, counting in redis")
            self._shared_down_until = 0.0

    async def close(self) -> None:
        """Close the Redis connection pool (``limits`` offers no close of its own)."""
        # Written against limits 5.8.0 (its Redis bridge's ``get_connection``).
        if self._shared is not None and isinstance(self._shared.bridge, RedispyBridge):
            connection = cast(redis.Redis, self._shared.bridge.get_connection())
            await connection.aclose()


def status_of(item: RateLimitItem, count: int, reset: float) -> RateLimitStatus:
    """What ``count`` hits in the window ending at ``reset`` (Unix time) leave of ``item``."""
    allowed = count <= item.amount
    return RateLimitStatus(
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, item.amount - count),
        reset=int(reset),
        retry_after=0 if allowed else max(1, int(reset - time.time() + 0.999)),
    )
