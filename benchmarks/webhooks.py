"""Webhooks from commit to a receiver's acknowledgement, on PostgreSQL (issue 18's benchmark).

    .venv/bin/python benchmarks/webhooks.py
    .venv/bin/python benchmarks/webhooks.py --backlog 5000 --rate 500 --seconds 10

One keyhouse instance in this process (its Runtime, the delivery worker running) on a fresh
PostgreSQL database of its own; a receiver in another process on loopback that answers 204 and
notes when each event arrived. Events are made by creating keys through the service layer
(``create_key``, each in its own unit of work), so each is a real transaction with its audit
event and its outbox row.

1. Backlog: ``--backlog`` keys created with the worker stopped, then the worker started: how many
   events per second one instance delivers, next to a bare client of the same library
   (``aiohttp``) posting the same number of bodies to the same receiver at the same concurrency
   (no database, no signing): the baseline of the same run; and, for comparison, ``httpx``. The
   CPU each event cost this process, the receiver's process and the whole machine.
2. Live: keys created at ``--rate`` per second for ``--seconds`` with the worker running: the
   delay from each commit to the receiver's acknowledgement, p50 / p99 / max.
3. Leak report to refusal (needs Redis): two instances on the database and Redis; instance B
   holds a key in its cache as valid; the report goes to instance A; how long until B refuses
   the key, over ``--leaks`` keys.

Runs on uvloop, as ``keyhouse serve`` does when it is installed (``--loop asyncio``: the standard
loop). Writes benchmarks/results/webhooks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    HUGE_RATE_LIMIT,
    BenchmarkError,
    free_port,
    print_table,
    write_results,
)

from app.auth.presentation import Presentation  # noqa: E402
from app.auth.principal import Caller  # noqa: E402
from app.config import Settings  # noqa: E402
from app.keys import schemas as keys_schemas  # noqa: E402
from app.keys import service as keys_service  # noqa: E402
from app.kit.db import session_scope  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import upgrade_to_head  # noqa: E402
from app.organizations.service import OrganizationCreated, create_organization  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.webhooks import schemas as webhook_schemas  # noqa: E402
from app.webhooks import service as webhook_service  # noqa: E402

# Attempts in flight (keyhouse's webhook_max_concurrency, and the bare clients'): --concurrency.
IN_FLIGHT = {"attempts": Settings.model_fields["webhook_max_concurrency"].default}
PRODUCERS = 8
# The benchmark's own deployment, gone with it; every instance of it shares this secret.
SECRET_KEY = secrets.token_hex(32)


# --- what the receiver (benchmarks/webhook_receiver.py, its own process) noted -------------


class Arrivals:
    """The receiver's log: one line per request, ``<time> <key id> <organization> <event id>``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def clear(self) -> None:
        self.path.write_text("")

    def lines(self) -> list[str]:
        return self.path.read_text().splitlines()

    def by_key(self) -> dict[str, float]:
        arrivals: dict[str, float] = {}
        for line in self.lines():
            moment, key_id, *_ = line.split(" ")
            arrivals.setdefault(key_id, float(moment))
        return arrivals


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} did not happen within {within:g} s")
        await asyncio.sleep(0.01)


async def _received(log: Arrivals, count: int, within: float) -> None:
    await _until(lambda: len(log.lines()) >= count, within, f"{count} arrivals")


# --- keyhouse -----------------------------------------------------------------------------------


async def _fresh_database(server_url: str, name: str, *, drop: bool) -> str:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if not drop:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return server_url.rpartition("/")[0] + "/" + name


def _settings(url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=url,
        webhook_allow_http_hosts="127.0.0.1",
        webhook_max_concurrency=IN_FLIGHT["attempts"],
        default_rate_limit_requests=HUGE_RATE_LIMIT,
        secret_key=SECRET_KEY,
        **extra,
    )


async def _organization(runtime: Runtime) -> Caller:
    async with session_scope(runtime.sessionmaker) as session:
        created = await create_organization(
            session,
            "Bench",
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, OrganizationCreated)
    return Caller(created.organization.id, runtime.catalogue.names())


async def _endpoint(runtime: Runtime, caller: Caller, url: str) -> None:
    async with session_scope(runtime.sessionmaker) as session:
        made = await webhook_service.create_endpoint(
            session,
            caller,
            webhook_schemas.EndpointCreate(url=url, events=["key.created"]),
            allowed_hosts=frozenset({"127.0.0.1"}),
            server_secret=runtime.server_secret,
        )
    assert isinstance(made, webhook_schemas.EndpointWithSecret)


async def _create_key(runtime: Runtime, caller: Caller) -> tuple[str, float]:
    async with session_scope(runtime.sessionmaker) as session:
        created = await keys_service.create_key(
            session,
            caller,
            keys_schemas.KeyCreate(name=f"k-{secrets.token_hex(6)}", scopes=["read:billing"]),
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, keys_schemas.KeyCreated)
    return created.api_key.id, time.time()


async def _produce(
    runtime: Runtime, caller: Caller, count: int, rate: float | None
) -> dict[str, float]:
    """``count`` keys from PRODUCERS tasks, at ``rate`` per second in all (None: flat out)."""
    commits: dict[str, float] = {}
    started = time.monotonic()
    next_index = iter(range(count))

    async def producer() -> None:
        for index in next_index:
            if rate is not None:
                due = started + index / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            key_id, committed = await _create_key(runtime, caller)
            commits[key_id] = committed

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    return commits


def _cpu_of(pid: int) -> float:
    """CPU seconds a process has used (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(cpu) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and I/O wait


async def _backends(runtime: Runtime) -> set[int]:
    """The database server's processes serving this benchmark's database."""
    query = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    async with runtime.engine.connect() as connection:
        return {int(pid) for pid in (await connection.execute(query)).scalars()}


class CpuMeter:
    """CPU seconds spent meanwhile by this process, the receiver's process, the database's
    processes serving this database, and the whole machine."""

    def __init__(self, receiver_pid: int, backends: set[int]) -> None:
        self._receiver = receiver_pid
        self._backends = {pid: _cpu_of(pid) for pid in backends}
        self._start = (time.process_time(), _cpu_of(receiver_pid), _machine_busy())

    def per_event_ms(self, count: int, backends: set[int]) -> dict[str, float]:
        ends = (time.process_time(), _cpu_of(self._receiver), _machine_busy())
        spent = [(end - start) * 1000 / count for start, end in zip(self._start, ends, strict=True)]
        database = sum(_cpu_of(pid) - self._backends.get(pid, 0.0) for pid in backends)
        return {
            "keyhouse": spent[0],
            "receiver": spent[1],
            "machine": spent[2],
            "database": database * 1000 / count,
        }


async def backlog(
    url: str, receiver_url: str, log: Arrivals, count: int, receiver_pid: int
) -> dict[str, Any]:
    runtime = Runtime.create(_settings(url))
    caller = await _organization(runtime)
    await _endpoint(runtime, caller, receiver_url)
    produced_at = time.monotonic()
    await _produce(runtime, caller, count, None)
    production = count / (time.monotonic() - produced_at)
    log.clear()
    started = time.time()
    meter = CpuMeter(receiver_pid, await _backends(runtime))
    worker = asyncio.create_task(runtime.webhooks.run())
    try:
        await _received(log, count, within=600)
        delivered = count / (max(log.by_key().values()) - started)
        # What delivering cost each part (the machine's figure includes whatever else ran).
        cpu_ms = meter.per_event_ms(count, await _backends(runtime))
        # Stopped once every attempt is written down: none is left to a later run.
        await _settled(runtime)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker  # its connections back in the pool before the pool closes
        await runtime.webhooks.close()
        await runtime.engine.dispose()
    return {
        "events": count,
        "producedPerSecond": production,
        "deliveredPerSecond": delivered,
        "cpuMsPerEvent": cpu_ms["keyhouse"],
        "receiverCpuMsPerEvent": cpu_ms["receiver"],
        "machineCpuMsPerEvent": cpu_ms["machine"],
        "databaseCpuMsPerEvent": cpu_ms["database"],
    }


async def _settled(runtime: Runtime) -> None:
    pending = text("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
    for _ in range(3000):
        async with runtime.engine.connect() as connection:
            if (await connection.execute(pending)).scalar() == 0:
                return
        await asyncio.sleep(0.01)
    raise BenchmarkError("deliveries were still pending")


BARE_BODY = json.dumps({"type": "key.created", "data": {"key": {"id": "x" * 26}}, "pad": "." * 400})


async def bare_client(receiver_url: str, log: Arrivals, count: int) -> tuple[float, float]:
    """The same number of POSTs of a similar body, from aiohttp (keyhouse's client, with its
    options) at the same concurrency."""
    log.clear()
    semaphore = asyncio.Semaphore(IN_FLIGHT["attempts"])
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=IN_FLIGHT["attempts"]),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    ) as client:

        async def post() -> None:
            async with semaphore, client.post(receiver_url, data=BARE_BODY.encode()) as answer:
                await answer.content.read(200)

        started = time.time()
        cpu_started = time.process_time()
        await asyncio.gather(*(post() for _ in range(count)))
    return count / (time.time() - started), (time.process_time() - cpu_started) * 1000 / count


async def bare_httpx(receiver_url: str, log: Arrivals, count: int) -> tuple[float, float]:
    """The same, from httpx (keyhouse's client before): for comparison."""
    log.clear()
    body = BARE_BODY
    semaphore = asyncio.Semaphore(IN_FLIGHT["attempts"])
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=IN_FLIGHT["attempts"]), trust_env=False
    ) as client:

        async def post() -> None:
            async with semaphore:
                await client.post(receiver_url, content=body)

        started = time.time()
        cpu_started = time.process_time()
        await asyncio.gather(*(post() for _ in range(count)))
    return count / (time.time() - started), (time.process_time() - cpu_started) * 1000 / count


async def live(
    url: str, receiver_url: str, log: Arrivals, rate: float, seconds: float
) -> dict[str, Any]:
    runtime = Runtime.create(_settings(url))
    caller = await _organization(runtime)
    await _endpoint(runtime, caller, receiver_url)
    log.clear()
    await runtime.start()
    try:
        count = int(rate * seconds)
        started = time.monotonic()
        commits = await _produce(runtime, caller, count, rate)
        achieved = count / (time.monotonic() - started)
        await _received(log, count, within=120)
    finally:
        await runtime.stop()
    arrivals = log.by_key()
    missing = [key for key in commits if key not in arrivals]
    if missing:
        raise BenchmarkError(f"{len(missing)} events were not delivered")
    delays = sorted((arrivals[key] - committed) * 1000 for key, committed in commits.items())
    return {
        "events": count,
        "targetPerSecond": rate,
        "producedPerSecond": achieved,
        "delayMs": {
            "p50": statistics.median(delays),
            "p99": delays[int(len(delays) * 0.99) - 1],
            "max": delays[-1],
        },
    }


async def leak_to_refusal(url: str, redis_url: str, keys: int) -> dict[str, Any]:
    signing = ec.generate_private_key(ec.SECP256R1())
    pem = (
        signing.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    document = json.dumps(
        {"public_keys": [{"key_identifier": "k", "key": pem, "is_current": True}]}
    )
    common = {"redis_url": redis_url, "deliver_webhooks": False, "cache_ttl_seconds": 3600}
    a = Runtime.create(_settings(url, leak_report_public_keys=document, **common))
    b = Runtime.create(_settings(url, **common))
    app = create_app(runtime=a)
    timings = []
    async with app.router.lifespan_context(app):
        await b.start()
        try:
            await _until(lambda: b.broadcast.live, 10, "the broadcast")
            caller = await _organization(a)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
                for _ in range(keys):
                    timings.append(await _one_leak(a, b, caller, client, signing))
        finally:
            await b.stop()
    timings.sort()
    return {"keys": keys, "ms": {"p50": statistics.median(timings), "max": timings[-1]}}


async def _one_leak(
    a: Runtime,
    b: Runtime,
    caller: Caller,
    client: httpx.AsyncClient,
    signing: ec.EllipticCurvePrivateKey,
) -> float:
    async with session_scope(a.sessionmaker) as session:
        created = await keys_service.create_key(
            session,
            caller,
            keys_schemas.KeyCreate(name=f"leak-{secrets.token_hex(6)}", scopes=["read:billing"]),
            catalogue=a.catalogue,
            key_prefix=a.settings.key_prefix,
            broadcast=a.broadcast,
        )
    assert isinstance(created, keys_schemas.KeyCreated)
    presentation = Presentation.of(created.secret)
    assert (await b.verifier.verify(presentation)).valid  # B holds it as valid
    body = json.dumps([{"token": created.secret, "type": "keyhouse_api_key", "url": "x"}]).encode()
    signature = base64.b64encode(signing.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {"GITHUB-PUBLIC-KEY-IDENTIFIER": "k", "GITHUB-PUBLIC-KEY-SIGNATURE": signature}
    started = time.perf_counter()
    response = await client.post("/v1/keys/leaked", content=body, headers=headers)
    assert response.json()[0]["label"] == "true_positive"
    for _ in range(100_000):  # at most about 100 s
        if not (await b.verifier.verify(presentation)).valid:
            break
        await asyncio.sleep(0.001)
    return (time.perf_counter() - started) * 1000


# --- the run ------------------------------------------------------------------------------------


async def run(
    args: argparse.Namespace, receiver_url: str, log: Arrivals, receiver_pid: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    name = f"keyhouse_webhooks_{secrets.token_hex(3)}"
    url = await _fresh_database(args.postgres_url, name, drop=False)
    try:
        engine = create_async_engine(url)
        await upgrade_to_head(engine)
        await engine.dispose()
        results["backlog"] = await backlog(url, receiver_url, log, args.backlog, receiver_pid)
        results["backlog"]["concurrency"] = IN_FLIGHT["attempts"]
        bare_rate, bare_cpu = await bare_client(receiver_url, log, args.backlog)
        results["backlog"]["bareClientPerSecond"] = bare_rate
        results["backlog"]["bareClientCpuMsPerEvent"] = bare_cpu
        httpx_rate, httpx_cpu = await bare_httpx(receiver_url, log, args.backlog)
        results["backlog"]["bareHttpxPerSecond"] = httpx_rate
        results["backlog"]["bareHttpxCpuMsPerEvent"] = httpx_cpu
        results["live"] = await live(url, receiver_url, log, args.rate, args.seconds)
        if args.redis_url:
            results["leak"] = await leak_to_refusal(url, args.redis_url, args.leaks)
    finally:
        await _fresh_database(args.postgres_url, name, drop=True)
    return results


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchmarkError("the receiver did not start")


def report(results: dict[str, Any]) -> None:
    backlog = results["backlog"]
    ratio = backlog["deliveredPerSecond"] / backlog["bareClientPerSecond"]
    rows = [
        [
            f"events delivered per second (backlog, {backlog['concurrency']} at once)",
            f"{backlog['deliveredPerSecond']:,.0f}",
            "≥ 500",
        ],
        [
            "bare aiohttp client, same receiver and concurrency",
            f"{backlog['bareClientPerSecond']:,.0f}",
            f"keyhouse at {ratio:.0%}",
        ],
        [
            "bare httpx client, the same",
            f"{backlog['bareHttpxPerSecond']:,.0f}",
            f"{backlog['bareHttpxCpuMsPerEvent']:.2f} ms CPU per request",
        ],
        [
            "CPU of this process per event, keyhouse / bare aiohttp client",
            f"{backlog['cpuMsPerEvent']:.2f} / {backlog['bareClientCpuMsPerEvent']:.2f} ms",
            f"{1000 / backlog['cpuMsPerEvent']:,.0f} events per CPU second",
        ],
        [
            "CPU per delivered event: database / receiver / whole machine",
            f"{backlog['databaseCpuMsPerEvent']:.2f} / {backlog['receiverCpuMsPerEvent']:.2f}"
            f" / {backlog['machineCpuMsPerEvent']:.2f} ms",
            "machine: every process and other load included",
        ],
        [
            "keys created per second (8 producers, through the service)",
            f"{backlog['producedPerSecond']:,.0f}",
            "",
        ],
    ]
    live_run = results["live"]
    delay = live_run["delayMs"]
    rows.append(
        [
            f"commit → acknowledged at {live_run['producedPerSecond']:,.0f}/s: p50 / p99 / max",
            f"{delay['p50']:.1f} / {delay['p99']:.1f} / {delay['max']:.1f} ms",
            "",
        ]
    )
    if "leak" in results:
        leak = results["leak"]["ms"]
        rows.append(
            [
                "leak report → refused by the other instance: p50 / max",
                f"{leak['p50']:.1f} / {leak['max']:.1f} ms",
                "< 1 s",
            ]
        )
    print_table(["measure", "figure", "target / baseline"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--leaks", type=int, default=20)
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--concurrency", type=int, default=IN_FLIGHT["attempts"])
    args = parser.parse_args(argv)
    IN_FLIGHT["attempts"] = args.concurrency
    port = free_port()
    log = Arrivals(Path(tempfile.mkdtemp(prefix="keyhouse-webhooks-")) / "arrivals.log")
    log.clear()
    receiver = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "webhook_receiver.py"),
            str(port),
            str(log.path),
            args.loop,
        ]
    )
    loop_factory = uvloop.new_event_loop if args.loop == "uvloop" else None
    try:
        _wait_for_port(port)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            results = runner.run(run(args, f"http://127.0.0.1:{port}/hooks", log, receiver.pid))
    finally:
        receiver.terminate()
        receiver.wait(5)
    report(results)
    print(f"\nwritten to {write_results('webhooks', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
