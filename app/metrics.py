"""Process metrics (Prometheus), served at ``/metrics``: what the on-call asks of a running
keyhouse. Every label takes values from a fixed set (routes, outcomes, the dashboard's operation
names, error codes): never a key, a hint or text a request sent, so the series stay bounded.

Counters and histograms are updated where things happen; the gauges describing state (cache
size, the usage buffer, the broadcast) are read from the runtime when ``/metrics`` is scraped.

Several workers behind one port (``keyhouse serve --workers N``) each count in files of their own
under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, chosen when the
library is imported), and whichever worker answers ``/metrics`` reads them all: counters and
histograms are summed, each gauge combined as its ``multiprocess_mode`` says.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# Read once, as prometheus-client itself does when it is imported (just above): a directory set
# later would be one this process never wrote to.
MULTIPROCESS_DIRECTORY = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

HTTP_REQUEST_DURATION = Histogram(
    "keyhouse_http_request_duration_seconds",
    "Requests by route (a fixed set; 'other' for any other path) and HTTP status, with their time.",
    ["route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

VERIFICATIONS = Counter(
    "keyhouse_verifications",
    "Verifications by outcome (VALID, or the reason a key was refused), on every surface.",
    ["outcome"],
)

KEY_CACHE_REQUESTS = Counter(
    "keyhouse_key_cache_requests",
    "Key lookups in the in-memory cache: hit, or miss (then the database or the negative cache).",
    ["result"],
)
KEY_CACHE_HITS = KEY_CACHE_REQUESTS.labels("hit")
KEY_CACHE_MISSES = KEY_CACHE_REQUESTS.labels("miss")
KEY_CACHE_ENTRIES = Gauge(
    "keyhouse_key_cache_entries",
    "Keys held in the in-memory cache (summed over the workers).",
    multiprocess_mode="livesum",
)
KEY_DATABASE_LOOKUPS = Counter(
    "keyhouse_key_database_lookups", "Keys looked up in the database (cache misses that got there)."
)

USAGE_REFUSED = Counter(
    "keyhouse_usage_refused_uses",
    "Key uses whose usage bucket could not be stored (an unstorable label, or a row the database"
    " refused): set aside, logged once and never retried.",
)
USAGE_BUFFERED_BUCKETS = Gauge(
    "keyhouse_usage_buffered_buckets",
    "Usage buckets counted in memory, waiting for a flush (summed over the workers).",
    multiprocess_mode="livesum",
)
USAGE_OLDEST_UNFLUSHED = Gauge(
    "keyhouse_usage_oldest_unflushed_seconds",
    "Age of the oldest use counted in memory and not yet written (0 when none is waiting).",
    multiprocess_mode="livemax",
)
USAGE_FLUSH_DURATION = Histogram(
    "keyhouse_usage_flush_duration_seconds",
    "Time of each usage flush that wrote something.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
USAGE_FLUSH_FAILURES = Counter(
    "keyhouse_usage_flush_failures", "Usage flushes that failed (their counts are kept)."
)

BROADCAST_CONNECTED = Gauge(
    "keyhouse_broadcast_connected",
    "1 while this instance hears key changes from the others (Redis), else 0 (short cache TTL)."
    " With several workers, 1 only while every worker does.",
    multiprocess_mode="livemin",
)
RATE_LIMIT_SHARED = Gauge(
    "keyhouse_rate_limit_shared",
    "1 while rate limits are counted in Redis (shared by every instance), else 0 (in memory)."
    " With several workers, 1 only while every worker does.",
    multiprocess_mode="livemin",
)

GRAPHQL_OPERATIONS = Counter(
    "keyhouse_graphql_operations",
    "GraphQL requests by operation (a dashboard operation's name, else 'other') and outcome (OK,"
    " or the first error's code).",
    ["operation", "code"],
)

WEBHOOK_ATTEMPTS = Counter(
    "keyhouse_webhook_attempts",
    "Webhook delivery attempts by result: succeeded (a 2xx answer) or failed (retried later).",
    ["result"],
)
LEAK_REPORTS = Counter(
    "keyhouse_leak_reports",
    "Tokens reported by secret scanners, by label: true_positive (one of our keys) or "
    "false_positive.",
    ["label"],
)


def exposition() -> bytes:
    """The text ``/metrics`` answers: this process's metrics, or every worker's together."""
    if MULTIPROCESS_DIRECTORY is None:
        return generate_latest()
    forget_dead_workers(MULTIPROCESS_DIRECTORY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIRECTORY)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_this_process() -> None:
    """A worker that stops takes its gauges with it (its counters stay in the sums)."""
    if MULTIPROCESS_DIRECTORY is not None:
        mark_process_dead(os.getpid(), MULTIPROCESS_DIRECTORY)  # type: ignore[no-untyped-call]


def forget_dead_workers(directory: str) -> None:
    """Drop the gauges of workers that died without stopping (killed, crashed): uvicorn starts
    another in their place, and a dead worker's cache size must not stay in the sum."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # it exists, as another user's process
