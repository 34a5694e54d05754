"""``keyhouse serve --workers 2``: two processes behind one port, sharing one database and Redis.

Which worker answers a request is the kernel's choice. Each request here comes on a connection of
its own, and each worker counts what it answered in files of its own (in
``KEYHOUSE_METRICS_DIRECTORY``, set by the test): a test reads them worker by worker to show that
both answered, and goes on sending until they have. As in tests/test_instances.py, cache entries
outlive the test, so a worker can only learn of a revocation the other answered through the
Redis broadcast."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import REDIS_URL, fresh_postgres_database, require_redis
from tests.processes import (
    ROOT,
    STOP_SECONDS,
    environment_without_settings,
    free_port,
    keyhouse_command,
    keyhouse_json,
    started,
)
from tests.test_instances import (
    Answer,
    Endpoint,
    check,
    create_key,
    query,
    revoke_key,
    stored_usage,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]

WORKERS = 2
VERIFICATIONS = "keyhouse_verifications_total"
# A request at a time would mostly land on the worker that accepted the last one: send them
# in batches, at once, each on a new connection, until every worker has answered some.
BATCH = 16
MAX_BATCHES = 20
WORKERS_START_SECONDS = 60


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics: Path
    database_url: str
    organization_id: str
    admin_key: str

    def output(self) -> str:
        return f"--- keyhouse serve --workers {WORKERS} ({self.log}) ---\n{self.log.read_text()}"


def worker_samples(metrics: Path, name: str, kind: str = "counter") -> dict[int, Counter[str]]:
    """Per worker (pid): a metric's values by their labels joined, read from that worker's file
    (counts and 0/1 states: whole numbers)."""
    found: dict[int, Counter[str]] = {}
    for file in metrics.glob(f"{kind}_*.db"):
        pid = int(file.stem.rsplit("_", 1)[1])
        with tempfile.TemporaryDirectory() as alone:
            shutil.copy(file, Path(alone) / file.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)  # type: ignore[no-untyped-call]
            values: Counter[str] = Counter()
            for family in registry.collect():
                for sample in family.samples:
                    if sample.name == name:
                        values[",".join(sample.labels.values())] += int(sample.value)
        found[pid] = values
    return found


def workers_ready(server: Server) -> bool:
    """Both workers started, each sharing rate limits and hearing the broadcast through Redis
    (each writes its own state every second)."""
    broadcast = worker_samples(server.metrics, "keyhouse_broadcast_connected", "gauge_livemin")
    shared = worker_samples(server.metrics, "keyhouse_rate_limit_shared", "gauge_livemin")
    live = [pid for pid, values in broadcast.items() if values[""] == 1 and shared[pid][""] == 1]
    return len(live) == WORKERS


def wait_for_workers(server: Server) -> None:
    """Until both workers are ready. Longer than one server's start: the parent migrates first,
    then each worker imports keyhouse in a fresh interpreter, on a machine other tests load."""
    deadline = time.monotonic() + WORKERS_START_SECONDS
    while not workers_ready(server):
        if server.process.poll() is not None:
            pytest.fail(
                f"keyhouse serve exited with {server.process.returncode}:\n{server.output()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"the workers were not ready in {WORKERS_START_SECONDS}s:\n{server.output()}"
            )
        time.sleep(0.1)


def outcomes_by_worker(server: Server) -> dict[int, Counter[str]]:
    return worker_samples(server.metrics, VERIFICATIONS)


@contextmanager
def deployment(directory: Path, database: str) -> Iterator[dict[str, str]]:
    """The settings of a fresh deployment on ``database`` with the shared Redis."""
    require_redis()
    env = environment_without_settings()
    env.update(
        KEYHOUSE_REDIS_URL=REDIS_URL,
        KEYHOUSE_CACHE_TTL_SECONDS="3600",
        KEYHOUSE_CACHE_TTL_WITHOUT_BROADCAST_SECONDS="3600",
        # Uses wait in each worker's memory until its shutdown writes them.
        KEYHOUSE_USAGE_FLUSH_INTERVAL_SECONDS="3600",
        # Each worker sets up its own logging: JSON lines, like the parent's.
        KEYHOUSE_LOG_FORMAT="json",
    )
    if database == "sqlite":
        yield {**env, "KEYHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{directory}/keyhouse.db"}
        return
    with fresh_postgres_database() as url:
        yield {**env, "KEYHOUSE_DATABASE_URL": url}


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    if request.param == "postgresql":
        request.applymarker(pytest.mark.postgres)
    directory = tmp_path_factory.mktemp(f"workers-{request.param}")
    with deployment(directory, request.param) as env:
        created = keyhouse_json(env, "init", "--organization", "Acme")
        port = free_port()
        log = directory / "serve.log"
        command = [*keyhouse_command(), "serve", "--port", str(port), "--workers", str(WORKERS)]
        metrics = directory / "metrics"
        serve_env = {**env, "KEYHOUSE_METRICS_DIRECTORY": str(metrics)}
        with started(command, log, env=serve_env, cwd=ROOT) as process:
            server = Server(
                f"http://127.0.0.1:{port}",
                process,
                log,
                metrics,
                env["KEYHOUSE_DATABASE_URL"],
                created["organizationId"],
                created["apiKey"],
            )
            wait_for_workers(server)
            yield server


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    # No connection is kept: every request is accepted anew, by either worker.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=10, trust_env=False, limits=limits
    ) as client:
        yield client
    assert "Traceback" not in server.log.read_text(), server.output()


async def until_every_worker_answered(
    server: Server, outcome: str, send: Callable[[], Awaitable[Answer]]
) -> list[Answer]:
    """Batches of ``send`` at once until each worker has answered at least one with ``outcome``."""
    before = outcomes_by_worker(server)
    answers: list[Answer] = []
    for _ in range(MAX_BATCHES):
        answers += await asyncio.gather(*(send() for _ in range(BATCH)))
        after = outcomes_by_worker(server)
        if all(after[pid][outcome] > before.get(pid, Counter())[outcome] for pid in after):
            return answers
    pytest.fail(f"a worker never answered {outcome}: {before} -> {outcomes_by_worker(server)}")


@pytest.mark.parametrize("endpoint", ["verify", "auth"])
async def test_a_revoked_key_is_refused_at_the_next_request_whichever_worker_answers(
    server: Server, client: httpx.AsyncClient, endpoint: Endpoint
) -> None:
    key = await create_key(client, server.admin_key, f"revoked-{endpoint}")
    # Valid on both: each worker now holds the key in its cache.
    warm = await until_every_worker_answered(
        server, "VALID", lambda: check(client, endpoint, key.secret)
    )
    assert {answer.code for answer in warm} == {"VALID"}

    await revoke_key(client, server.admin_key, key.id)

    after = await until_every_worker_answered(
        server, "REVOKED", lambda: check(client, endpoint, key.secret)
    )
    assert {answer.code for answer in after} == {"REVOKED"}, Counter(a.code for a in after)


async def test_a_limit_of_10_allows_exactly_10_of_40_requests_spread_over_both_workers(
    server: Server, client: httpx.AsyncClient
) -> None:
    for attempt in range(5):
        key = await create_key(client, server.admin_key, f"limited-{attempt}", rate_limit=(10, 60))
        before = outcomes_by_worker(server)

        answers = await asyncio.gather(
            *(check(client, ("verify", "auth")[i % 2], key.secret) for i in range(40))
        )

        assert Counter(answer.code for answer in answers) == {"VALID": 10, "RATE_LIMITED": 30}
        after = outcomes_by_worker(server)
        answered = {pid: after[pid].total() - before.get(pid, Counter()).total() for pid in after}
        if all(answered.values()):
            return
    pytest.fail(f"the 40 requests never reached both workers: {answered}")


async def test_metrics_count_what_every_worker_answered(
    server: Server, client: httpx.AsyncClient
) -> None:
    key = await create_key(client, server.admin_key, "counted")
    await until_every_worker_answered(server, "VALID", lambda: check(client, "verify", key.secret))

    by_worker = outcomes_by_worker(server)
    served = (await client.get("/metrics")).text

    valid = sum(values["VALID"] for values in by_worker.values())
    assert f'{VERIFICATIONS}{{outcome="VALID"}} {valid}' in served, served
    assert "keyhouse_broadcast_connected 1.0" in served


async def test_usage_counted_by_both_workers_is_stored_exactly_after_sigterm(
    server: Server, client: httpx.AsyncClient
) -> None:
    keys = [await create_key(client, server.admin_key, f"usage-{n}") for n in range(3)]
    await revoke_key(client, server.admin_key, keys[2].id)
    expected: Counter[tuple[str, str]] = Counter()

    async def use(n: int) -> Answer:
        key = keys[n % 3]
        answer = await check(client, ("verify", "auth")[n % 2], key.secret)
        expected[(key.id, answer.code)] += 1
        return answer

    sent = iter(range(10_000))
    await until_every_worker_answered(server, "VALID", lambda: use(next(sent)))
    await until_every_worker_answered(server, "REVOKED", lambda: use(next(sent)))
    # Nothing was written yet: every use waits in a worker's memory.
    key_ids = {key.id for key in keys}
    written = await stored_usage(server.database_url, server.organization_id)
    assert not key_ids & {key_id for key_id, _ in written.get("MINUTE", Counter())}

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=STOP_SECONDS * 4) == 0, server.output()

    # The banner aside (printed before logging starts), every line is a JSON log entry.
    logged = server.log.read_text().split("GraphiQL's Headers tab)\n", 1)[1].splitlines()
    messages = Counter(json.loads(line)["message"] for line in logged)
    assert messages["Application shutdown complete."] == WORKERS, server.output()
    stored = await stored_usage(server.database_url, server.organization_id)
    for granularity in ("MINUTE", "HOUR", "DAY"):
        mine = Counter(
            {bucket: n for bucket, n in stored[granularity].items() if bucket[0] in key_ids}
        )
        assert mine == expected, (granularity, mine, expected)
    rows = await query(server.database_url, "SELECT COUNT(*) FROM organizations")
    assert rows == [(1,)]


def test_several_workers_without_redis_are_refused_in_one_line_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    env = {
        **environment_without_settings(),
        "KEYHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/keyhouse.db",
    }

    done = subprocess.run(
        [*keyhouse_command(), "serve", "--workers", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "--workers 2 needs Redis (KEYHOUSE_REDIS_URL)" in done.stderr
    assert list(tmp_path.iterdir()) == []
