"""Key verification throughput and latency (issue 3's benchmark).

    .venv/bin/python benchmarks/verify.py

In one run, each server on one uvicorn worker over loopback, measured with wrk (32 connections,
2 threads, a short warm-up, then 10 s), the targets taking turns for three rounds (``--rounds``);
every ratio is the median of the rounds' own ratios, so a noisy spell on the shared machine
does not decide the verdict:

* a bare Starlette route returning a small JSON body (benchmarks/bare_app.py), the baseline;
* a bare Starlette POST route that reads a verify request and answers a verify-sized body, to
  show how much of the gap is HTTP work rather than keyhouse's;
* keyhouse ``POST /v1/keys/verify`` with a valid, cached key;
* keyhouse ``GET /v1/auth`` with the key in ``X-API-Key``;

plus the in-process verification function (``KeyVerifier.verify``) on a cached key.

Then, on a second keyhouse server with Redis configured (``--redis-url``; skipped when Redis does
not answer), the key controls' cost: ``POST /v1/keys/verify`` with a key that has an IP allowlist
and credits (each use spends one in Redis: a Lua script's round trip), against the plain cached
key on the same server, whose rate limit is counted in Redis too. Prints a table and the issues'
targets, and writes benchmarks/results/verify.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import (
    HUGE_RATE_LIMIT,
    MEASUREMENT_HEADERS,
    MEASUREMENT_LEGEND,
    BenchmarkError,
    LoadSettings,
    Measurement,
    Server,
    Target,
    baseline_server,
    check_clean,
    http_request,
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
    throughput_ratio,
    verdict,
    wrap,
    write_results,
    write_wrk_script,
)
from sqlalchemy import event

from app.auth.presentation import Presentation
from app.config import Settings
from app.runtime import Runtime

SCOPE = "read:charge_points"
OPERATION = "bench"

# The targets.
VERIFY_MIN_RATIO = 0.70
VERIFY_MAX_P99_MS = 5.0
IN_PROCESS_MAX_US = 10.0
CONTROLS_MIN_RATIO = 0.80
# The controlled key: usable from this network only, with more credits than any run spends.
ALLOWLIST = ["127.0.0.0/8", "203.0.113.0/24"]
CALLER_IP = "203.0.113.7"
CREDITS = 1_000_000_000


@dataclass(frozen=True)
class InProcess:
    calls: int
    batch_size: int
    median_batch_mean_us: float
    min_batch_mean_us: float
    individual_median_us: float
    individual_p99_us: float
    database_statements: int


async def measure_in_process(database_url: str, secret: str, calls: int) -> InProcess:
    """``await runtime.verifier.verify(...)`` on a cached key, as the web app runs it."""
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        default_rate_limit_requests=HUGE_RATE_LIMIT,
        default_rate_limit_per_seconds=1,
    )
    runtime = Runtime.create(settings)
    await runtime.start()
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    try:
        verifier = runtime.verifier
        scopes = [SCOPE]
        first = await verifier.verify(
            Presentation.of(secret), required_scopes=scopes, operation=OPERATION
        )
        if not first.valid:
            raise BenchmarkError(f"in-process verification refused the key: {first.outcome}")
        for _ in range(10_000):  # warm-up
            await verifier.verify(
                Presentation.of(secret), required_scopes=scopes, operation=OPERATION
            )
        # As the app does after start-up (app/main.py): long-lived objects out of the collector.
        gc.collect()
        gc.freeze()
        event.listen(runtime.engine.sync_engine, "before_cursor_execute", count)
        try:
            batch_size = 1000
            batch_means: list[float] = []
            for _ in range(max(1, calls // batch_size)):
                started = time.perf_counter_ns()
                for _ in range(batch_size):
                    await verifier.verify(
                        Presentation.of(secret), required_scopes=scopes, operation=OPERATION
                    )
                batch_means.append((time.perf_counter_ns() - started) / batch_size / 1000)
            individual: list[int] = []
            for _ in range(min(calls, 50_000)):
                started = time.perf_counter_ns()
                await verifier.verify(
                    Presentation.of(secret), required_scopes=scopes, operation=OPERATION
                )
                individual.append(time.perf_counter_ns() - started)
        finally:
            event.remove(runtime.engine.sync_engine, "before_cursor_execute", count)
            gc.unfreeze()
        last = await verifier.verify(
            Presentation.of(secret), required_scopes=scopes, operation=OPERATION
        )
        if not last.valid:
            raise BenchmarkError(f"in-process verification ended refused: {last.outcome}")
    finally:
        await runtime.stop()
    individual.sort()
    return InProcess(
        calls=len(batch_means) * batch_size,
        batch_size=batch_size,
        median_batch_mean_us=statistics.median(batch_means),
        min_batch_mean_us=min(batch_means),
        individual_median_us=statistics.median(individual) / 1000,
        individual_p99_us=individual[int(len(individual) * 0.99)] / 1000,
        database_statements=statements,
    )


def check_verify_answer(server: Server, body: str) -> None:
    status, _, raw = http_request(
        server.url("/v1/keys/verify"),
        method="POST",
        body=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    answer = json.loads(raw)
    if status != 200 or answer.get("valid") is not True:
        raise BenchmarkError(f"/v1/keys/verify did not accept the key: {status} {answer}")


def check_auth_answer(server: Server, url: str, secret: str) -> None:
    status, headers, raw = http_request(url, headers={"X-API-Key": secret})
    if status != 200:
        raise BenchmarkError(f"/v1/auth refused the key: {status} {raw!r}")
    if "x-api-key-id" not in headers:
        raise BenchmarkError(f"/v1/auth answered without X-Api-Key-Id: {headers}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200_000, help="in-process verify calls")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of all four targets (ratios: the median)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for the key controls' rows (skipped when it does not answer)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Measurement], dict[str, Any]]:
    load = LoadSettings(args.connections, args.threads, args.duration, args.warmup)
    env = keyhouse_env(workdir / "bench.db")
    print("Setting up keyhouse (keyhouse init --organization Bench --json) ...", flush=True)
    tenant = keyhouse_init(env)

    print(f"In-process KeyVerifier.verify, {args.calls:,} calls on a cached key ...", flush=True)
    in_process = asyncio.run(
        measure_in_process(env["KEYHOUSE_DATABASE_URL"], tenant.api_key, args.calls)
    )

    print(
        f"HTTP: wrk -t{load.threads} -c{load.connections}, one uvicorn worker each, loopback",
        flush=True,
    )
    verify_body = json.dumps({"key": tenant.api_key, "scopes": [SCOPE], "operation": OPERATION})
    verify_script = write_wrk_script(
        workdir / "verify.lua",
        method="POST",
        body=verify_body,
        headers={"Content-Type": "application/json"},
    )
    auth_script = write_wrk_script(
        workdir / "auth.lua", method="GET", headers={"X-API-Key": tenant.api_key}
    )
    bare_name, bare_post_name = "bare Starlette JSON route", "bare POST, verify-sized"
    verify_name, auth_name = "POST /v1/keys/verify", "GET /v1/auth"
    with (
        baseline_server("bare", "bare_app:app", log_dir=workdir) as bare,
        keyhouse_server(env, log_dir=workdir) as keyhouse,
    ):
        auth_path = f"/v1/auth?scope={SCOPE}"
        auth_url = keyhouse.url(auth_path)
        check_verify_answer(keyhouse, verify_body)
        check_auth_answer(keyhouse, auth_url, tenant.api_key)
        rounds = measure_in_rounds(
            [
                Target(bare_name, bare, "/"),
                Target(bare_post_name, bare, "/verify-shaped", verify_script),
                Target(verify_name, keyhouse, "/v1/keys/verify", verify_script),
                Target(auth_name, keyhouse, auth_path, auth_script),
            ],
            load=load,
            rounds=args.rounds,
        )
        # Still accepted after the load: the numbers are for valid answers, not refusals.
        check_verify_answer(keyhouse, verify_body)
        check_auth_answer(keyhouse, auth_url, tenant.api_key)

    for each in rounds:
        for measurement in each.values():
            check_clean(measurement)
    verify_ratio = median_ratio(rounds, verify_name, bare_name)
    auth_ratio = median_ratio(rounds, auth_name, bare_name)
    verify_shaped_ratio = median_ratio(rounds, verify_name, bare_post_name)
    measurements = [
        median_measurement(rounds, name)
        for name in (bare_name, bare_post_name, verify_name, auth_name)
    ]
    verify_p99 = statistics.median(each[verify_name].result.p99_ms for each in rounds)
    targets = [
        {
            "target": "verify req/s >= 70% of bare",
            "value": f"{verify_ratio:.0%}",
            "passed": verify_ratio >= VERIFY_MIN_RATIO,
        },
        {
            "target": f"verify p99 < {VERIFY_MAX_P99_MS:g} ms at {load.connections} connections",
            "value": f"{verify_p99:.2f} ms",
            "passed": verify_p99 < VERIFY_MAX_P99_MS,
        },
        {
            "target": f"in-process verify < {IN_PROCESS_MAX_US:g} us (median)",
            "value": f"{in_process.median_batch_mean_us:.2f} us",
            "passed": in_process.median_batch_mean_us < IN_PROCESS_MAX_US,
        },
    ]
    controls = measure_controls(args, workdir, env, tenant, load)
    if controls is not None:
        measurements.extend(controls.measurements)
        targets.append(controls.target)
    return measurements, {
        "controls": None if controls is None else controls.summary,
        "load": asdict(load),
        "measurements": [m.as_json() for m in measurements],
        "rounds": [{name: m.as_json() for name, m in each.items()} for each in rounds],
        "roundRatios": {
            "verify/bare": [
                throughput_ratio(each[verify_name], each[bare_name]) for each in rounds
            ],
        },
        "ratios": {
            "verify/bare": verify_ratio,
            "auth/bare": auth_ratio,
            "verify/bare POST verify-sized": verify_shaped_ratio,
            "bare POST verify-sized/bare": median_ratio(rounds, bare_post_name, bare_name),
        },
        "cpuRatios": {
            "verify/bare": median_cpu_ratio(rounds, verify_name, bare_name),
            "auth/bare": median_cpu_ratio(rounds, auth_name, bare_name),
        },
        "inProcess": asdict(in_process),
        "targets": targets,
        "passed": all(t["passed"] for t in targets),
    }


@dataclass(frozen=True)
class Controls:
    measurements: list[Measurement]
    target: dict[str, Any]
    summary: dict[str, Any]


def redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


def graphql(server: Server, key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    status, _, raw = http_request(
        server.url("/graphql"),
        method="POST",
        body=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    answer: dict[str, Any] = json.loads(raw)
    if status != 200 or answer.get("errors"):
        raise BenchmarkError(f"GraphQL failed: {status} {answer}")
    return answer


CREATE_CONTROLLED = """
mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } secret } }
"""
CONTROL = """
mutation($input: UpdateApiKeyInput!) { updateApiKey(input: $input) { userErrors { message } } }
"""


def controlled_key(server: Server, admin_key: str) -> str:
    """A key with an allowlist and credits, made through the control plane."""
    created = graphql(
        server, admin_key, CREATE_CONTROLLED, {"input": {"name": "controlled", "scopes": [SCOPE]}}
    )["data"]["createApiKey"]
    controls = {"ipAllowlist": ALLOWLIST, "credits": {"remaining": CREDITS}}
    changed = graphql(
        server, admin_key, CONTROL, {"input": {"id": created["apiKey"]["id"], **controls}}
    )
    if changed["data"]["updateApiKey"]["userErrors"]:
        raise BenchmarkError(f"updateApiKey refused: {changed}")
    secret: str = created["secret"]
    return secret


def measure_controls(
    args: argparse.Namespace, workdir: Path, env: dict[str, str], tenant: Any, load: LoadSettings
) -> Controls | None:
    """The controlled key against the plain one, both verified by one server with Redis."""
    if not redis_answers(args.redis_url):
        print(f"Key controls: skipped, no Redis at {args.redis_url}", flush=True)
        return None
    print("Key controls: allowlist + credits in Redis vs the plain key, with Redis", flush=True)
    redis_env = {**env, "KEYHOUSE_REDIS_URL": args.redis_url}
    plain_name, controlled_name = "verify, plain key (Redis)", "verify, allowlist + credits (Redis)"
    with keyhouse_server(redis_env, log_dir=workdir) as keyhouse:
        secret = controlled_key(keyhouse, tenant.api_key)
        bodies = {
            plain_name: {"key": tenant.api_key, "scopes": [SCOPE], "operation": OPERATION},
            controlled_name: {
                "key": secret,
                "scopes": [SCOPE],
                "operation": OPERATION,
                "ip": CALLER_IP,
            },
        }
        scripts = {
            name: write_wrk_script(
                workdir / f"controls-{number}.lua",
                method="POST",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            for number, (name, body) in enumerate(bodies.items())
        }
        for body in bodies.values():
            check_verify_answer(keyhouse, json.dumps(body))
        rounds = measure_in_rounds(
            [Target(name, keyhouse, "/v1/keys/verify", script) for name, script in scripts.items()],
            load=load,
            rounds=args.rounds,
        )
        for body in bodies.values():
            check_verify_answer(keyhouse, json.dumps(body))
    for each in rounds:
        for measurement in each.values():
            check_clean(measurement)
    ratio = median_ratio(rounds, controlled_name, plain_name)
    return Controls(
        measurements=[median_measurement(rounds, name) for name in (plain_name, controlled_name)],
        target={
            "target": "allowlist + credits (Redis) req/s >= 80% of the plain key (Redis)",
            "value": f"{ratio:.0%}",
            "passed": ratio >= CONTROLS_MIN_RATIO,
        },
        summary={
            "controlled/plain": ratio,
            "roundRatios": [
                throughput_ratio(each[controlled_name], each[plain_name]) for each in rounds
            ],
            "cpuRatio": median_cpu_ratio(rounds, controlled_name, plain_name),
        },
    )


def report(results: dict[str, Any], measurements: list[Measurement]) -> None:
    print()
    print_table(MEASUREMENT_HEADERS, measurement_rows(measurements))
    print(wrap(MEASUREMENT_LEGEND))
    print()
    ratios, cpu = results["ratios"], results["cpuRatios"]
    per_round = ", ".join(f"{value:.0%}" for value in results["roundRatios"]["verify/bare"])
    print(f"verify/bare req/s in each round: {per_round}")
    print(
        f"req/s ratios (median over rounds): verify/bare = {ratios['verify/bare']:.0%}, "
        f"auth/bare = {ratios['auth/bare']:.0%}; a bare POST of the same sizes reaches "
        f"{ratios['bare POST verify-sized/bare']:.0%} of bare, and verify "
        f"{ratios['verify/bare POST verify-sized']:.0%} of that"
    )
    print(
        "CPU-time ratios (bare's server CPU per request / the target's; what the req/s ratio "
        f"would be with a core to itself): verify/bare = {percent(cpu['verify/bare'])}, "
        f"auth/bare = {percent(cpu['auth/bare'])}"
    )
    in_process = results["inProcess"]
    print(
        wrap(
            f"in-process KeyVerifier.verify (cached key, {in_process['calls']:,} calls): "
            f"median of {in_process['batch_size']}-call batch means "
            f"{in_process['median_batch_mean_us']:.2f} us (best batch "
            f"{in_process['min_batch_mean_us']:.2f} us); single calls timed one by one: median "
            f"{in_process['individual_median_us']:.2f} us, p99 "
            f"{in_process['individual_p99_us']:.2f} us; database statements during the loop: "
            f"{in_process['database_statements']}"
        )
    )
    controls = results["controls"]
    if controls is not None:
        rounds = ", ".join(f"{value:.0%}" for value in controls["roundRatios"])
        print(
            f"key controls: allowlist + credits (Redis) / plain key (Redis) = "
            f"{controls['controlled/plain']:.0%} (rounds: {rounds}), CPU-time ratio "
            f"{percent(controls['cpuRatio'])}"
        )
    print()
    print_table(
        ["target (issues 3, 17)", "measured", "verdict"],
        [[t["target"], t["value"], verdict(t["passed"])] for t in results["targets"]],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_wrk()
    install_signal_handlers()
    try:
        with tempfile.TemporaryDirectory(prefix="keyhouse-bench-verify-") as tmp:
            measurements, results = run(args, Path(tmp))
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(results, measurements)
    path = write_results("verify", results)
    print(f"\nResults: {path}")
    return 1 if args.strict and not results["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
