"""Running the service: one process, or several workers behind one port (``--workers N``).

Workers are uvicorn's: the parent binds the port once and starts N processes that accept on it,
replaces one that dies, and on SIGTERM stops them all (each flushes its usage first). What the
workers share they share as separate instances do: the database, and Redis for rate limits and
the revocation broadcast. Hence several workers need Redis: without it each would keep its own
budget per key, and a revocation answered by one would reach the others only when their cache
entries expire.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.config import Settings
from app.kit.logs import logging_config
from app.main import create_app
from app.runtime import Runtime

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
# The files of prometheus-client's multiprocess mode: counter_<pid>.db, gauge_livesum_<pid>.db...
_METRICS_FILES = "*_*.db"
# How long a worker may take to answer the parent's ping before it is replaced. A new worker
# imports keyhouse first, which takes several seconds on a busy machine: uvicorn's default of 5
# replaced workers that were still starting.
WORKER_HEALTHCHECK_SECONDS = 30


def workers_problem(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` processes cannot serve with these settings (one line), or None."""
    if workers < 1:
        return "--workers must be at least 1."
    if workers > 1 and settings.redis_url is None:
        return (
            f"--workers {workers} needs Redis (KEYHOUSE_REDIS_URL), which the workers share for "
            "rate limits and revocation; without it run one worker."
        )
    return None


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    runtime: Callable[[Settings], Runtime] = Runtime.create,
) -> None:
    """Serve until stopped. A single process serves a runtime built from ``settings``; workers
    build their own from the environment (the settings' source), so the plane is passed to them
    there. uvicorn sets up logging (in each worker too) from the configuration it is given."""
    config = logging_config(settings.log_level, settings.log_format)
    if workers == 1:
        uvicorn.run(
            create_app(runtime=runtime(settings)),
            host=host,
            port=port,
            log_config=config,
            access_log=False,
            **forwarding(settings),
        )
        return
    os.environ["KEYHOUSE_PLANE"] = settings.plane.value
    with _metrics_directory(settings.metrics_directory) as directory:
        # Read by each worker when it imports prometheus-client: every worker counts in files
        # of its own there, and /metrics, whichever worker answers, sums them.
        os.environ[MULTIPROCESS_DIRECTORY] = str(directory)
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            host=host,
            port=port,
            log_config=config,
            access_log=False,
            **forwarding(settings),
        )


def forwarding(settings: Settings) -> dict[str, Any]:
    """uvicorn's proxy settings, from KEYHOUSE_TRUSTED_PROXIES alone: uvicorn would otherwise
    trust X-Forwarded-For from 127.0.0.1 on its own, whatever keyhouse's setting says (one
    notion of a trusted proxy, app/auth/network.py)."""
    trusted = [str(network) for network in settings.trusted_proxy_networks]
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}


@contextmanager
def _metrics_directory(chosen: str | None) -> Iterator[Path]:
    """The operator's directory emptied of an earlier run's counts, or a directory of this
    run's own, removed afterwards."""
    if chosen:
        directory = Path(chosen)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(_METRICS_FILES):
            stale.unlink()
        yield directory
        return
    directory = Path(tempfile.mkdtemp(prefix="keyhouse-metrics-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
