"""Data-plane latency under control-plane load (issue 12's benchmark).

    .venv/bin/python benchmarks/isolation.py

In one run, on one SQLite database, two deployments:

* one process answering both planes (``keyhouse serve``, the default);
* two processes sharing the database: ``keyhouse serve --plane data`` and ``--plane control``.

For each: ``POST /v1/keys/verify`` with a cached key (wrk, a few connections, a short warm-up,
then 10 s) alone, then again while 8 clients (a second wrk, 8 connections) send the heaviest
analytics query the default maximum cost admits: as many aliases of a ten-year daily usage
series (every field of each point) as fit under the maximum. Prints a table and each
deployment's p99 under load / p99 alone (target: at most 3), and writes
benchmarks/results/isolation.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    BenchmarkError,
    LoadSettings,
    Measurement,
    Server,
    WrkResult,
    check_clean,
    http_request,
    install_signal_handlers,
    keyhouse_env,
    keyhouse_init,
    keyhouse_server,
    measure,
    parse_wrk,
    print_table,
    require_wrk,
    uvicorn_server,
    verdict,
    wrap,
    write_results,
    write_wrk_script,
)
from graphql import parse

from app.config import Settings
from app.graphql.cost import CostModel, operation_cost
from app.graphql.schema import build_schema
from app.usage.graphql import LIST_SIZES

MAX_P99_RATIO = 3.0
HEAVY_CLIENTS = 8
SERIES_DAYS = 3650


def series_alias(alias: str, start: str, end: str) -> str:
    return (
        f'{alias}: usage(from: "{start}", to: "{end}", granularity: DAY) '
        "{ series { start requests valid rejected } }"
    )


def heaviest_admitted_query() -> tuple[str, int, int]:
    """The most aliases of a ten-year daily series whose cost the default maximum admits, with
    that cost and the maximum."""
    settings = Settings()
    schema = build_schema(settings)._schema
    model = CostModel(maximum=settings.graphql_max_cost, list_sizes=LIST_SIZES)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, stop = (end - timedelta(days=SERIES_DAYS)).isoformat(), end.isoformat()

    def query(aliases: int) -> str:
        return "{ " + " ".join(series_alias(f"s{n}", start, stop) for n in range(aliases)) + " }"

    def cost(aliases: int) -> int:
        return operation_cost(model, schema, parse(query(aliases)), None, None) or 0

    aliases = 1
    while cost(aliases + 1) <= model.maximum:
        aliases += 1
    return query(aliases), cost(aliases), model.maximum


@dataclass(frozen=True)
class Deployment:
    name: str
    verify_alone: Measurement
    verify_under_load: Measurement
    heavy: WrkResult

    @property
    def p99_ratio(self) -> float:
        return self.verify_under_load.result.p99_ms / self.verify_alone.result.p99_ms


def check_verify(server: Server, body: str) -> None:
    status, _, raw = http_request(
        server.url("/v1/keys/verify"),
        method="POST",
        body=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    if status != 200 or json.loads(raw).get("valid") is not True:
        raise BenchmarkError(f"/v1/keys/verify did not accept the key: {status} {raw!r}")


def check_heavy(server: Server, body: str, key: str, maximum: int) -> None:
    """The heavy query is answered (not refused for its cost), all of it."""
    status, _, raw = http_request(
        server.url("/graphql"),
        method="POST",
        body=body.encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    answer = json.loads(raw)
    cost = answer.get("extensions", {}).get("cost", {})
    if status != 200 or answer.get("errors") or cost.get("requestedQueryCost", 0) > maximum:
        raise BenchmarkError(f"the heavy query was not answered: {status} {raw[:500]!r}")
    if any(len(value["series"]) != SERIES_DAYS for value in answer["data"].values()):
        raise BenchmarkError("the heavy query's series are not ten years of days")


@contextmanager
def heavy_clients(server: Server, script: Path, seconds: float) -> Iterator[list[WrkResult]]:
    """8 clients sending the heavy query for ``seconds``; the result once the block ends."""
    command = [
        require_wrk(),
        "-t1",
        f"-c{HEAVY_CLIENTS}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        server.url("/graphql"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results: list[WrkResult] = []
    try:
        time.sleep(1.0)  # every client has a request in flight before verify is measured
        yield results
        out, err = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise BenchmarkError(f"wrk (heavy clients) failed ({process.returncode}):\n{err}")
        results.append(parse_wrk(out))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def measure_deployment(
    name: str,
    data: Server,
    control: Server,
    *,
    load: LoadSettings,
    scripts: Mapping[str, Path],
) -> Deployment:
    print(f"{name}:", flush=True)
    alone = measure("verify alone", data, "/v1/keys/verify", load=load, script=scripts["verify"])
    seconds = load.warmup_s + load.duration_s + 2
    with heavy_clients(control, scripts["heavy"], seconds) as heavy:
        loaded = measure(
            f"verify with {HEAVY_CLIENTS} heavy clients",
            data,
            "/v1/keys/verify",
            load=load,
            script=scripts["verify"],
        )
    for measurement in (alone, loaded):
        check_clean(measurement)
    return Deployment(name, alone, loaded, heavy[0])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--connections", type=int, default=4, help="verify connections")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Deployment], dict[str, Any]]:
    load = LoadSettings(args.connections, 1, args.duration, args.warmup)
    env = keyhouse_env(workdir / "bench.db")
    print("Setting up keyhouse (keyhouse init --organization Bench --json) ...", flush=True)
    tenant = keyhouse_init(env)
    query, cost, maximum = heaviest_admitted_query()
    print(f"Heavy query: cost {cost:,} of the maximum {maximum:,}", flush=True)
    verify_body = json.dumps({"key": tenant.api_key, "operation": "bench"})
    heavy_body = json.dumps({"query": query})
    json_headers = {"Content-Type": "application/json"}
    scripts = {
        "verify": write_wrk_script(
            workdir / "verify.lua", method="POST", body=verify_body, headers=json_headers
        ),
        "heavy": write_wrk_script(
            workdir / "heavy.lua",
            method="POST",
            body=heavy_body,
            headers={**json_headers, "X-API-Key": tenant.api_key},
        ),
    }
    deployments: list[Deployment] = []
    with keyhouse_server(env, log_dir=workdir) as both:
        check_verify(both, verify_body)
        check_heavy(both, heavy_body, tenant.api_key, maximum)
        deployments.append(
            measure_deployment("one process", both, both, load=load, scripts=scripts)
        )
    with ExitStack() as stack:
        data, control = (
            stack.enter_context(
                uvicorn_server(
                    f"keyhouse-{plane}",
                    ["app.main:create_app", "--factory"],
                    env={**env, "KEYHOUSE_PLANE": plane},
                    log_dir=workdir,
                    ready_path="/healthz",
                )
            )
            for plane in ("data", "control")
        )
        check_verify(data, verify_body)
        check_heavy(control, heavy_body, tenant.api_key, maximum)
        deployments.append(
            measure_deployment(
                "--plane data + --plane control", data, control, load=load, scripts=scripts
            )
        )
    return deployments, {
        "load": asdict(load),
        "heavyQuery": {"cost": cost, "maximumCost": maximum, "clients": HEAVY_CLIENTS},
        "deployments": [
            {
                "name": each.name,
                "verifyAlone": each.verify_alone.as_json(),
                "verifyUnderLoad": each.verify_under_load.as_json(),
                "heavy": asdict(each.heavy),
                "p99Ratio": each.p99_ratio,
                "passed": each.p99_ratio <= MAX_P99_RATIO,
            }
            for each in deployments
        ],
    }


def report(deployments: list[Deployment], cost: int, maximum: int) -> None:
    print()
    rows = []
    for each in deployments:
        alone, loaded = each.verify_alone.result, each.verify_under_load.result
        rows.append(
            [
                each.name,
                f"{alone.p50_ms:.2f} / {alone.p99_ms:.2f} ms",
                f"{loaded.p50_ms:.2f} / {loaded.p99_ms:.2f} ms",
                f"{each.p99_ratio:.1f}x",
                f"{alone.requests_per_second:,.0f} / {loaded.requests_per_second:,.0f}",
                f"{each.heavy.requests_per_second:.1f} ({each.heavy.p50_ms:,.0f} ms p50)",
                verdict(each.p99_ratio <= MAX_P99_RATIO),
            ]
        )
    print_table(
        [
            "deployment",
            "verify p50 / p99 alone",
            "under load",
            "p99 ratio",
            "verify req/s alone / load",
            "heavy req/s",
            f"p99 ratio <= {MAX_P99_RATIO:g}",
        ],
        rows,
    )
    print(
        wrap(
            f"Load: {HEAVY_CLIENTS} clients sending the heaviest analytics query the default "
            f"maximum cost admits (cost {cost:,} of {maximum:,}: ten-year daily series, every "
            "field of each point). Verify: a cached key."
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    install_signal_handlers()
    require_wrk()
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="keyhouse-isolation-") as tmp:
        try:
            deployments, results = run(args, Path(tmp))
        except BenchmarkError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    report(deployments, results["heavyQuery"]["cost"], results["heavyQuery"]["maximumCost"])
    print(f"Results written to {write_results('isolation', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
