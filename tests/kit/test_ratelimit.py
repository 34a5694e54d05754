"""``RateLimiter``: one budget per key, in memory or shared through Redis, and a local fallback
when Redis is configured but down."""

from __future__ import annotations

import gc
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.config import Settings
from app.kit import ratelimit
from app.kit.ratelimit import Budget, RateLimiter, rate_limit_item
from app.runtime import Runtime

# Nothing listens on port 1: connections are refused at once.
REDIS_DOWN_URL = "redis://127.0.0.1:1/0"

MakeLimiter = Callable[[str], RateLimiter]


@pytest.fixture
async def make_limiter() -> AsyncIterator[MakeLimiter]:
    """Redis-backed limiters whose connections are closed after the test."""
    made: list[RateLimiter] = []

    def make(url: str) -> RateLimiter:
        limiter = RateLimiter(url)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


def budget(requests: int, per_seconds: int) -> Budget:
    """A budget of this test's own key: reruns against the same Redis never share counters."""
    return Budget.of(rate_limit_item(requests, per_seconds), f"key_test_{uuid.uuid4().hex}")


async def test_memory_limiter_allows_the_limit_then_refuses() -> None:
    limiter = RateLimiter()
    key = budget(3, 60)

    statuses = [await limiter.hit(key) for _ in range(4)]

    assert [status.allowed for status in statuses] == [True, True, True, False]
    assert [status.remaining for status in statuses] == [2, 1, 0, 0]
    assert limiter.backend == "memory"


async def test_budgets_of_different_keys_are_separate() -> None:
    limiter = RateLimiter()

    first = await limiter.hit(budget(1, 60))
    second = await limiter.hit(budget(1, 60))

    assert first.allowed
    assert second.allowed


async def test_refused_hit_reports_when_to_retry() -> None:
    limiter = RateLimiter()
    key = budget(1, 30)
    await limiter.hit(key)

    refused = await limiter.hit(key)

    assert not refused.allowed
    assert 1 <= refused.retry_after <= 30
    headers = refused.headers()
    assert headers["X-RateLimit-Limit"] == "1"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 30
    assert int(headers["X-RateLimit-Reset"]) <= int(time.time()) + 31


class FakeClock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1_800_000_000.0
        monkeypatch.setattr("app.kit.ratelimit.time.time", lambda: self.now)


async def test_a_new_window_starts_when_the_last_one_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(monkeypatch)
    limiter = RateLimiter()
    key = budget(2, 60)
    first_window = [await limiter.hit(key) for _ in range(3)]

    clock.now += 60
    next_window = await limiter.hit(key)

    assert [status.allowed for status in first_window] == [True, True, False]
    assert first_window[0].reset == int(clock.now)
    assert next_window.allowed
    assert next_window.remaining == 1
    assert next_window.reset == int(clock.now + 60)


def test_local_windows_forget_ended_windows_as_the_table_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(monkeypatch)
    windows = ratelimit.LocalWindows()
    for number in range(1000):
        windows.incr(f"old_{number}", 10)
    clock.now += 11

    for number in range(2000):
        windows.incr(f"new_{number}", 10)

    assert len(windows) == 2000, "the 1,000 ended windows were swept out"


@pytest.mark.redis
async def test_limiters_on_one_redis_share_one_budget(
    redis_url: str, make_limiter: MakeLimiter
) -> None:
    instance_a = make_limiter(redis_url)
    instance_b = make_limiter(redis_url)
    key = budget(5, 60)

    allowed = 0
    for _ in range(6):
        for instance in (instance_a, instance_b):
            if (await instance.hit(key)).allowed:
                allowed += 1

    assert allowed == 5
    assert instance_a.backend == "redis"
    assert instance_b.backend == "redis"


@pytest.mark.redis
async def test_remaining_counts_down_across_instances(
    redis_url: str, make_limiter: MakeLimiter
) -> None:
    instance_a = make_limiter(redis_url)
    instance_b = make_limiter(redis_url)
    key = budget(4, 60)

    remaining = [
        (await instance_a.hit(key)).remaining,
        (await instance_b.hit(key)).remaining,
        (await instance_a.hit(key)).remaining,
    ]

    assert remaining == [3, 2, 1]


async def test_redis_down_falls_back_to_counting_in_memory(
    caplog: pytest.LogCaptureFixture, make_limiter: MakeLimiter
) -> None:
    limiter = make_limiter(REDIS_DOWN_URL)
    key = budget(2, 60)

    with caplog.at_level(logging.WARNING, logger="app.kit.ratelimit"):
        statuses = [await limiter.hit(key) for _ in range(3)]

    assert [status.allowed for status in statuses] == [True, True, False]
    assert limiter.backend == "memory (redis unavailable)"


async def test_redis_down_is_logged_once_however_often_it_is_retried(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    make_limiter: MakeLimiter,
) -> None:
    # Retry Redis on every hit, so that every hit meets the outage again.
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_SECONDS", 0.0)
    limiter = make_limiter(REDIS_DOWN_URL)

    with caplog.at_level(logging.WARNING, logger="app.kit.ratelimit"):
        for _ in range(5):
            assert (await limiter.hit(budget(100, 60))).allowed

    warnings = [r for r in caplog.records if r.name == "app.kit.ratelimit"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "counting in process memory" in warnings[0].getMessage()
    assert limiter.backend == "memory (redis unavailable)"


@pytest.mark.redis
async def test_stopping_the_runtime_closes_the_rate_limit_redis_connection(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/k.db", redis_url=redis_url)
    runtime = Runtime.create(settings)
    await runtime.start()
    assert (await runtime.limiter.hit(budget(10, 60))).allowed
    assert runtime.limiter.backend == "redis"

    await runtime.stop()

    assert "did not stop in time" not in caplog.text
    # An unclosed redis connection says so when it is collected.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del runtime
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
