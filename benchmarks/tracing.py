"""What tracing costs a verification: on against off, in one run.

    .venv/bin/python benchmarks/tracing.py

* In process: ``KeyVerifier.verify`` on a cached key, without tracing and with it (each call a
  span, batched to an exporter that drops them: the span's own cost, not the export's).
* Over HTTP: ``POST /v1/keys/verify`` with a cached key on two keyhouse servers, one uvicorn
  worker each, one without KEYHOUSE_OTEL_ENDPOINT and one exporting to a collector stand-in in
  this process (OTLP/HTTP, answered at once), measured with wrk in turns for ``--rounds``
  rounds; the ratio is the median of the rounds' own ratios.

Prints a table and writes benchmarks/results/tracing.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common import (
    HUGE_RATE_LIMIT,
    MEASUREMENT_HEADERS,
    MEASUREMENT_LEGEND,
    LoadSettings,
    Target,
    check_clean,
    install_signal_handlers,
    keyhouse_env,
    keyhouse_init,
    keyhouse_server,
    measure_in_rounds,
    measurement_rows,
    median_cpu_ratio,
    median_measurement,
    median_ratio,
    percent,
    print_table,
    require_wrk,
    wrap,
    write_results,
    write_wrk_script,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from app.auth.presentation import Presentation
from app.config import Settings
from app.kit.tracing import Tracing
from app.runtime import Runtime

OFF, ON = "verify, tracing off", "verify, tracing on"


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def mean_verify_us(database_url: str, secret: str, calls: int, traced: bool) -> float:
    """The median over batches of 1,000 of the mean time of one cached verification."""
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        default_rate_limit_requests=HUGE_RATE_LIMIT,
        default_rate_limit_per_seconds=1,
    )
    runtime = Runtime.create(settings, tracing=Tracing(Dropped()) if traced else None)
    await runtime.start()
    try:
        verifier = runtime.verifier
        for _ in range(5_000):  # warm-up: the key cached
            await verifier.verify(Presentation.of(secret), operation="bench")
        means = []
        for _ in range(max(1, calls // 1000)):
            started = time.perf_counter_ns()
            for _ in range(1000):
                await verifier.verify(Presentation.of(secret), operation="bench")
            means.append((time.perf_counter_ns() - started) / 1000 / 1000)
        return statistics.median(means)
    finally:
        await runtime.stop()


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def collector() -> Iterator[str]:
    """A stand-in for an OpenTelemetry collector that accepts every export."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = keyhouse_env(workdir / "bench.db")
    tenant = keyhouse_init(env)
    in_process = {
        label: asyncio.run(
            mean_verify_us(env["KEYHOUSE_DATABASE_URL"], tenant.api_key, args.calls, traced)
        )
        for label, traced in (("off", False), ("on", True))
    }
    print(
        f"In process, one cached verification: {in_process['off']:.2f} us off, "
        f"{in_process['on']:.2f} us on"
    )
    load = LoadSettings(args.connections, args.threads, args.duration, args.warmup)
    body = f'{{"key": "{tenant.api_key}"}}'
    script = write_wrk_script(
        workdir / "verify.lua",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    for name in ("off", "on"):
        (workdir / name).mkdir()
    path = "/v1/keys/verify"
    with (
        collector() as endpoint,
        keyhouse_server(env, log_dir=workdir / "off") as off,
        keyhouse_server({**env, "KEYHOUSE_OTEL_ENDPOINT": endpoint}, log_dir=workdir / "on") as on,
    ):
        rounds = measure_in_rounds(
            [Target(OFF, off, path, script), Target(ON, on, path, script)],
            load=load,
            rounds=args.rounds,
        )
    for each in rounds:
        for measurement in each.values():
            check_clean(measurement)
    measurements = [median_measurement(rounds, name) for name in (OFF, ON)]
    print_table(MEASUREMENT_HEADERS, measurement_rows(measurements))
    print(wrap(MEASUREMENT_LEGEND))
    ratio = median_ratio(rounds, ON, OFF)
    cpu = median_cpu_ratio(rounds, ON, OFF)
    print(f"req/s with tracing on / off: {percent(ratio)} (CPU per request: {percent(cpu)})")
    return {
        "inProcessUs": in_process,
        "inProcessRatio": in_process["off"] / in_process["on"],
        "measurements": [m.as_json() for m in measurements],
        "ratios": {"on/off": ratio},
        "cpuRatios": {"on/off": cpu},
    }


def main(argv: Sequence[str] | None = None) -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=100_000, help="in-process verify calls")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    require_wrk()
    with tempfile.TemporaryDirectory(prefix="keyhouse-bench-tracing-") as directory:
        results = run(args, Path(directory))
    print(f"Results: {write_results('tracing', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
