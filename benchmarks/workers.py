"""Verification throughput with one worker and with two behind one port (``--workers``).

    .venv/bin/python benchmarks/workers.py

In one run, on one SQLite database and the local Redis (``--redis-url``), the same keyhouse
served by uvicorn with one worker, then with two (each as ``keyhouse serve --workers N`` runs
it: Redis shared, metrics in a multiprocess directory for two), taking turns for three rounds.
Each is measured with wrk (32 connections, 2 threads, a warm-up, then 10 s) on
``POST /v1/keys/verify`` with a cached key. Prints req/s and latency for each and the median of
the rounds' own ratios (two workers / one), and writes benchmarks/results/workers.json.

Two workers can only gain what the machine has spare: on a 2-core machine wrk, the workers and
Redis share two cores, so the ratio stays well below 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from common import (
    BenchmarkError,
    LoadSettings,
    Target,
    check_clean,
    http_request,
    install_signal_handlers,
    keyhouse_env,
    keyhouse_init,
    measure_in_rounds,
    median_measurement,
    median_ratio,
    print_table,
    require_wrk,
    uvicorn_server,
    write_results,
    write_wrk_script,
)

WORKER_COUNTS = (1, 2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both targets")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    require_wrk()
    load = LoadSettings(duration_s=args.duration, warmup_s=args.warmup)
    env = {**keyhouse_env(workdir / "bench.db"), "KEYHOUSE_REDIS_URL": args.redis_url}
    tenant = keyhouse_init(env)
    body = json.dumps({"key": tenant.api_key, "operation": "bench"})
    script = write_wrk_script(
        workdir / "verify.lua",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
    )
    with ExitStack() as stack:
        targets = []
        for workers in WORKER_COUNTS:
            server_env = dict(env)
            if workers > 1:
                metrics = workdir / f"metrics-{workers}"
                metrics.mkdir()
                server_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
            server = stack.enter_context(
                uvicorn_server(
                    f"keyhouse-{workers}-workers",
                    [
                        "app.main:create_app",
                        "--factory",
                        "--workers",
                        str(workers),
                        "--timeout-worker-healthcheck",
                        "30",
                    ],
                    env=server_env,
                    log_dir=workdir,
                    ready_path="/healthz",
                )
            )
            status, _, raw = http_request(
                server.url("/v1/keys/verify"),
                method="POST",
                body=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            if status != 200 or json.loads(raw).get("valid") is not True:
                raise BenchmarkError(f"{server.name} did not accept the key: {status} {raw!r}")
            targets.append(Target(f"{workers} worker(s)", server, "/v1/keys/verify", script))
        rounds = measure_in_rounds(targets, load=load, rounds=args.rounds)
    for each in rounds:
        for measurement in each.values():
            check_clean(measurement)
    one, two = (f"{workers} worker(s)" for workers in WORKER_COUNTS)
    ratio = median_ratio(rounds, two, one)
    rows = []
    for name in (one, two):
        result = median_measurement(rounds, name).result
        rows.append(
            [
                name,
                f"{result.requests_per_second:,.0f}",
                f"{result.p50_ms:.2f} / {result.p99_ms:.2f} ms",
            ]
        )
    print()
    print_table(["POST /v1/keys/verify", "req/s (median round)", "p50 / p99"], rows)
    print(f"\ntwo workers / one: {ratio:.2f}x (median of the rounds' own ratios)")
    return {
        "load": asdict(load),
        "rounds": [{name: m.as_json() for name, m in each.items()} for each in rounds],
        "ratioTwoWorkersToOne": ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    install_signal_handlers()
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyhouse-bench-workers-") as workdir:
        try:
            results = run(args, Path(workdir))
        except BenchmarkError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print(f"wrote {write_results('workers', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
