"""The dashboard's keys page over GraphQL, against Strawberry answering the same page from memory.

    .venv/bin/python benchmarks/graphql_keys.py

In one run, each server on one uvicorn worker over loopback, measured with wrk (32 connections,
2 threads, a short warm-up, then 10 s), the targets taking turns for three rounds (``--rounds``);
every ratio is the median of the rounds' own ratios:

* a stock Strawberry app answering ``{ __typename }`` (benchmarks/stock_graphql.py: plain
  ``strawberry.asgi.GraphQL``, no extensions, no caches), the baseline;
* keyhouse's keys-page query (``apiKeys(first: 50)`` with ``lastUsedAt``) against an organization
  of 1,000 keys, authenticated with ``X-API-Key``;
* for reference, keyhouse answering ``{ __typename }`` with the same key: authentication plus
  keyhouse's GraphQL stack, without the keys page's database work;
* for reference, a Strawberry app answering the same keys-page query from 1,000 keys in memory
  (``stock_graphql.keys_page_app``: no database, no authentication, parser and validation
  caches on): what Strawberry's own execution does with a page of 50 keys, before any
  database or authentication work.

Prints a table and the issue's target, and writes benchmarks/results/graphql_keys.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import (
    HUGE_RATE_LIMIT,
    MEASUREMENT_HEADERS,
    MEASUREMENT_LEGEND,
    BenchmarkError,
    LoadSettings,
    Measurement,
    Server,
    Target,
    Tenant,
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

from app.auth.principal import Caller
from app.config import Settings
from app.keys import schemas as keys_schemas
from app.keys import service as keys_service
from app.kit.db import session_scope
from app.kit.timeutil import utcnow
from app.runtime import Runtime

KEYS = 1000
PAGE_SIZE = 50
# The target: keyhouse's keys page at >= 85% of Strawberry's own keys page from memory (the
# ceiling for any Strawberry app: Strawberry's execution of the page, with no database or
# authentication), in the same run.
MIN_RATIO = 0.85

KEYS_PAGE_QUERY = """query KeysPage {
  apiKeys(first: PAGE_SIZE) {
    totalCount
    edges {
      cursor
      node { id name hint scopes status createdAt lastUsedAt expiresAt }
    }
  }
}""".replace("PAGE_SIZE", str(PAGE_SIZE))

TYPENAME_QUERY = "{ __typename }"
SEED_SCOPES = (
    ("read:charge_points",),
    ("read:charge_points", "read:sessions"),
    ("read:billing", "read:analytics"),
    ("write:charge_points", "read:charge_points", "write:webhooks"),
)


async def seed_keys(database_url: str, tenant: Tenant, count: int) -> None:
    """``count`` keys through the service layer, in one transaction: a quarter expire, half have
    been used (``last_used_at`` set), scopes vary."""
    settings = Settings(
        database_url=database_url,
        redis_url=None,
        default_rate_limit_requests=HUGE_RATE_LIMIT,
        default_rate_limit_per_seconds=1,
    )
    runtime = Runtime.create(settings)
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    now = utcnow()
    try:
        async with session_scope(runtime.sessionmaker) as session:
            for number in range(count):
                created = await keys_service.create_key(
                    session,
                    caller,
                    keys_schemas.KeyCreate(
                        name=f"bench key {number:04d}",
                        scopes=SEED_SCOPES[number % len(SEED_SCOPES)],
                        expires_in_days=365 if number % 4 == 0 else None,
                    ),
                    catalogue=runtime.catalogue,
                    key_prefix=runtime.settings.key_prefix,
                    broadcast=runtime.broadcast,
                )
                if not isinstance(created, keys_schemas.KeyCreated):
                    raise BenchmarkError(f"could not create a key: {created}")
                if number % 2 == 0:
                    created.api_key.last_used_at = now - timedelta(minutes=number)
                    session.add(created.api_key)
    finally:
        await runtime.broadcast.close()
        await runtime.engine.dispose()


def graphql_body(query: str) -> str:
    return json.dumps({"query": query})


def post_graphql(server: Server, path: str, body: str, key: str | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    status, _, raw = http_request(
        server.url(path), method="POST", body=body.encode(), headers=headers
    )
    answer: dict[str, Any] = json.loads(raw)
    if status != 200 or answer.get("errors"):
        raise BenchmarkError(f"{server.name} {path}: HTTP {status}: {raw[:500]!r}")
    return answer


def check_keys_page(server: Server, body: str, key: str | None, path: str = "/graphql") -> None:
    connection = post_graphql(server, path, body, key)["data"]["apiKeys"]
    edges = connection["edges"]
    if connection["totalCount"] != KEYS or len(edges) != PAGE_SIZE:
        raise BenchmarkError(
            f"keys page: totalCount {connection['totalCount']}, {len(edges)} edges; "
            f"expected {KEYS} and {PAGE_SIZE}"
        )
    if not any(edge["node"]["lastUsedAt"] for edge in edges):
        raise BenchmarkError("keys page: no key on the page has lastUsedAt")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the reference row keyhouse { __typename } (Strawberry's keys page from memory,"
        " the target's baseline, always runs)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of all targets (ratios: the median)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Measurement], dict[str, Any]]:
    load = LoadSettings(args.connections, args.threads, args.duration, args.warmup)
    env = keyhouse_env(workdir / "bench.db")
    print("Setting up keyhouse (keyhouse init --organization Bench --json) ...", flush=True)
    tenant = keyhouse_init(env)
    started = time.monotonic()
    # The admin key from init is the 1,000th.
    asyncio.run(seed_keys(env["KEYHOUSE_DATABASE_URL"], tenant, KEYS - 1))
    seconds = time.monotonic() - started
    print(f"Created {KEYS - 1} more keys through the service layer in {seconds:.1f}s", flush=True)

    print(
        f"HTTP: wrk -t{load.threads} -c{load.connections}, one uvicorn worker each, loopback",
        flush=True,
    )
    typename_body = graphql_body(TYPENAME_QUERY)
    keys_body = graphql_body(KEYS_PAGE_QUERY)
    json_headers = {"Content-Type": "application/json"}
    stock_script = write_wrk_script(
        workdir / "stock.lua", method="POST", body=typename_body, headers=json_headers
    )
    keyed_headers = {**json_headers, "X-API-Key": tenant.api_key}
    keys_script = write_wrk_script(
        workdir / "keys.lua", method="POST", body=keys_body, headers=keyed_headers
    )
    typename_script = write_wrk_script(
        workdir / "typename.lua", method="POST", body=typename_body, headers=keyed_headers
    )

    stock_keys_script = write_wrk_script(
        workdir / "stock_keys.lua", method="POST", body=keys_body, headers=json_headers
    )

    stock_name = "stock Strawberry { __typename }"
    keys_name = f"keyhouse keys page (first: {PAGE_SIZE}, {KEYS:,} keys)"
    typename_name = "keyhouse { __typename } (reference)"
    stock_keys_name = "Strawberry keys page from memory, cached (reference)"
    with contextlib.ExitStack() as servers:
        stock = servers.enter_context(
            baseline_server("stock-strawberry", "stock_graphql:app", log_dir=workdir)
        )
        keyhouse = servers.enter_context(keyhouse_server(env, log_dir=workdir))
        post_graphql(stock, "/", typename_body, None)
        check_keys_page(keyhouse, keys_body, tenant.api_key)
        post_graphql(keyhouse, "/graphql", typename_body, tenant.api_key)
        stock_keys = servers.enter_context(
            baseline_server("stock-strawberry-keys", "stock_graphql:keys_page_app", log_dir=workdir)
        )
        check_keys_page(stock_keys, keys_body, None, path="/")
        targets_to_load = [
            Target(stock_name, stock, "/", stock_script),
            Target(keys_name, keyhouse, "/graphql", keys_script),
            Target(stock_keys_name, stock_keys, "/", stock_keys_script),
        ]
        if not args.no_reference:
            targets_to_load.append(Target(typename_name, keyhouse, "/graphql", typename_script))
        rounds = measure_in_rounds(targets_to_load, load=load, rounds=args.rounds)
        # Still answered after the load (not rate limited, not refused).
        check_keys_page(keyhouse, keys_body, tenant.api_key)

    for each in rounds:
        for measurement in each.values():
            check_clean(measurement)
    measurements = [median_measurement(rounds, target.name) for target in targets_to_load]
    ratio = median_ratio(rounds, keys_name, stock_name)
    ceiling = median_ratio(rounds, keys_name, stock_keys_name)
    targets = [
        {
            "target": "keys page req/s >= 85% of Strawberry's keys page from memory",
            "value": f"{ceiling:.0%}",
            "passed": ceiling >= MIN_RATIO,
        }
    ]
    ratios: dict[str, float] = {"keysPage/stock": ratio, "keysPage/stockKeysPage": ceiling}
    cpu_ratios = {
        "keysPage/stock": median_cpu_ratio(rounds, keys_name, stock_name),
        "keysPage/stockKeysPage": median_cpu_ratio(rounds, keys_name, stock_keys_name),
        # The ceiling: Strawberry's own keys page from memory, against the same baseline.
        "stockKeysPage/stock": median_cpu_ratio(rounds, stock_keys_name, stock_name),
    }
    ratios["stockKeysPage/stock"] = median_ratio(rounds, stock_keys_name, stock_name)
    if not args.no_reference:
        ratios["keyhouseTypename/stock"] = median_ratio(rounds, typename_name, stock_name)
        cpu_ratios["keyhouseTypename/stock"] = median_cpu_ratio(rounds, typename_name, stock_name)
    return measurements, {
        "load": asdict(load),
        "keys": KEYS,
        "pageSize": PAGE_SIZE,
        "seedSeconds": seconds,
        "query": KEYS_PAGE_QUERY,
        "measurements": [m.as_json() for m in measurements],
        "rounds": [{name: m.as_json() for name, m in each.items()} for each in rounds],
        "roundRatios": {
            "keysPage/stock": [
                throughput_ratio(each[keys_name], each[stock_name]) for each in rounds
            ]
        },
        "ratios": ratios,
        "cpuRatios": cpu_ratios,
        "targets": targets,
        "passed": all(t["passed"] for t in targets),
    }


def report(results: dict[str, Any], measurements: list[Measurement]) -> None:
    print()
    print_table(MEASUREMENT_HEADERS, measurement_rows(measurements))
    print(wrap(MEASUREMENT_LEGEND))
    print()
    ratios, cpu = results["ratios"], results["cpuRatios"]
    per_round = ", ".join(f"{value:.0%}" for value in results["roundRatios"]["keysPage/stock"])
    print(f"keysPage/stock req/s in each round: {per_round}")
    print(
        "req/s ratios (median over rounds): "
        + ", ".join(f"{name} = {value:.0%}" for name, value in ratios.items())
    )
    print(
        wrap(
            "CPU-time ratios (the baseline's server CPU per request / the target's; what the req/s"
            " ratio would be with a core to itself): "
            + ", ".join(f"{name} = {percent(value)}" for name, value in cpu.items())
        )
    )
    print()
    print_table(
        ["target", "measured", "verdict"],
        [[t["target"], t["value"], verdict(t["passed"])] for t in results["targets"]],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_wrk()
    install_signal_handlers()
    try:
        with tempfile.TemporaryDirectory(prefix="keyhouse-bench-graphql-") as tmp:
            measurements, results = run(args, Path(tmp))
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(results, measurements)
    path = write_results("graphql_keys", results)
    print(f"\nResults: {path}")
    return 1 if args.strict and not results["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
