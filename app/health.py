"""Readiness: whether this instance can answer now, asked of its dependencies at the time of the
request (an orchestrator's probe, an operator's curl), each within a short timeout.

The database is required: without it no key outside the cache can be checked and the control
plane cannot answer, so the instance is not ready (HTTP 503). Redis is not: without it rate
limits are counted per instance and cache entries live only for the short TTL, so the instance
answers correctly, and is reported ``degraded`` with HTTP 200. Taking every instance out of the
load balancer because their shared Redis is down would turn that into a full outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from sqlalchemy import text

from app.runtime import Runtime

logger = logging.getLogger(__name__)

# Each probe's bound: a dependency slower than this to answer a ping is not fit to serve.
PROBE_TIMEOUT_SECONDS = 1.0


async def _answers(probe: Awaitable[object], dependency: str) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            result = await probe
    except Exception as exc:
        logger.warning("readiness: %s unavailable: %s", dependency, type(exc).__name__)
        return False
    if result is False:
        logger.warning("readiness: %s unavailable", dependency)
    return result is not False


async def _database(runtime: Runtime) -> bool:
    async with runtime.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


async def readiness(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of ``/readyz``."""
    redis_configured = runtime.broadcast.configured
    database_ok, redis_ok, _ = await asyncio.gather(
        _answers(_database(runtime), "database"),
        _answers(runtime.broadcast.ping(), "redis") if redis_configured else _skipped(),
        # The limiter learns the answer too: it counts in Redis or in memory from now on.
        _answers(runtime.limiter.check(), "rate limit storage"),
    )
    checks = {"database": "ok" if database_ok else "unavailable"}
    failed = [] if database_ok else ["database"]
    if redis_configured:
        checks["redis"] = "ok" if redis_ok else "unavailable"
        if not redis_ok:
            failed.append("redis")
    checks["rateLimits"] = runtime.limiter.backend
    if redis_configured:
        checks["revocationBroadcast"] = (
            "live"
            if runtime.broadcast.live
            else "down: cache entries expire after "
            f"{runtime.settings.cache_ttl_without_broadcast_seconds:g}s"
        )
    status = "unavailable" if not database_ok else "degraded" if failed else "ready"
    body = {"status": status, "checks": checks, "failed": failed}
    return (503 if not database_ok else 200), body


async def _skipped() -> bool:
    return True
