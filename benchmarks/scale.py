"""The dashboard at scale: one organization of 1k to 1M keys (issue 14's benchmark).

    .venv/bin/python benchmarks/scale.py      # PostgreSQL 1k..1M, SQLite 1k..100k
    .venv/bin/python benchmarks/scale.py --postgres-sizes 1000,100000 --sqlite-sizes 1000

For each database and size: a fresh database (PostgreSQL: one of its own on the server of
``--postgres-url``, dropped afterwards; SQLite: a temporary file), migrated, with an organization
created through the services and its other keys written in bulk (PostgreSQL: ``INSERT ... SELECT
generate_series``; SQLite: one ``executemany``), one audit event and one day of usage per key.
The keys vary as a big organization's do: a quarter hold ``read:billing``, a third expire
(half of those already have), one in twenty is revoked, one in fifty superseded.

Then each question is asked ``--requests`` times in a row through the whole application
(``httpx.ASGITransport``: authentication, GraphQL, the database; no network), and its median and
p95 in milliseconds are printed, with the ratio of each at the largest size to itself at the
smallest. The last rows create a key under the single-active-key policy, once: it supersedes
every active key of the organization (the creation's answer, then the time until the worker has
marked the last of them).

Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import HUGE_RATE_LIMIT, BenchmarkError, print_table, write_results  # noqa: E402

from app.config import Settings  # noqa: E402
from app.kit.db import session_scope  # noqa: E402
from app.kit.pagination import Cursor  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import upgrade_to_head  # noqa: E402
from app.organizations.service import OrganizationCreated, create_organization  # noqa: E402
from app.runtime import Runtime  # noqa: E402

PAGE = 50
SUPERSEDE_ROW = "createApiKey superseding every active key (once)"
SUPERSEDED_ROW = "… until every superseded key is marked (once)"
SUPERSEDED_WAIT_LOOKS = 12_000  # every 50 ms: 10 minutes
DEEP_PAGES = 50
SCOPE_SETS = (
    "read:charge_points",
    "read:charge_points read:sessions",
    "read:analytics read:billing",
    "read:charge_points write:charge_points write:webhooks",
)
# A key every STEP seconds back from now: a million keys span about two years.
STEP_SECONDS = 60

KEY_FIELDS = "id name hint scopes status createdAt lastUsedAt expiresAt"
PAGE_QUERY = (
    (
        "query($after: String, $filter: ApiKeyFilter) { apiKeys(first: PAGE, after: $after, "
        "filter: $filter) { totalCount pageInfo { hasNextPage endCursor } "
        "edges { cursor node { KEY_FIELDS } } } }"
    )
    .replace("PAGE", str(PAGE))
    .replace("KEY_FIELDS", KEY_FIELDS)
)
COUNTS_QUERY = "{ organization { keyCounts { total active revoked expired superseded } } }"
AUDIT_QUERY = (
    "{ auditLog(first: PAGE) { totalCount edges { node { id action occurredAt } } } }"
).replace("PAGE", str(PAGE))
BY_KEY_QUERY = (
    "query($from: DateTime!, $to: DateTime!) { usage(from: $from, to: $to, granularity: DAY) "
    "{ byKey(first: 10) { requests apiKey { id name } } } }"
)
CREATE_MUTATION = (
    "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { "
    "apiKey { id } secret supersededApiKeys { id } userErrors { code message } } }"
)
POLICY_MUTATION = (
    "mutation { updateKeyPolicy(input: {singleActiveKey: true, supersedeGraceHours: 24}) "
    "{ keysToSupersede userErrors { message } } }"
)


# --- building the data ------------------------------------------------------------------------


def _key_row(number: int, organization_id: str, now: datetime) -> dict[str, Any]:
    created = now - timedelta(seconds=STEP_SECONDS * (number + 1))
    expires = (
        now + timedelta(days=(number * 7919) % 730 - 365, seconds=number % 86400)
        if number % 3 == 0
        else None
    )
    return {
        "id": f"key_{number:022d}",
        "organization_id": organization_id,
        "name": f"bench {number}",
        "name_key": f"bench {number}",
        "scopes_text": SCOPE_SETS[number % 4],
        "key_hash": hashlib.sha256(f"bench {number}".encode()).hexdigest(),
        "hint": "kh_bench…0000",
        "created_at": created,
        "expires_at": expires,
        "revoked_at": created + timedelta(days=1) if number % 20 == 1 else None,
        "superseded_at": created + timedelta(days=1) if number % 50 == 3 else None,
    }


_POSTGRES_KEYS = """
INSERT INTO api_keys (id, organization_id, name, name_key, scopes_text, key_hash, hint,
                      created_at, expires_at, revoked_at, superseded_at)
SELECT 'key_' || lpad(i::text, 22, '0'), :org, 'bench ' || i, 'bench ' || i,
       (ARRAY[:s0, :s1, :s2, :s3])[i % 4 + 1],
       encode(sha256(convert_to('bench ' || i, 'UTF8')), 'hex'), 'kh_bench…0000',
       now_ - make_interval(secs => :step * (i + 1)),
       CASE WHEN i % 3 = 0 THEN now_ + make_interval(days => ((i * 7919) % 730 - 365)::int,
                                                     secs => i % 86400) END,
       CASE WHEN i % 20 = 1 THEN now_ - make_interval(secs => :step * (i + 1)) + interval '1 day'
       END,
       CASE WHEN i % 50 = 3 THEN now_ - make_interval(secs => :step * (i + 1)) + interval '1 day'
       END
FROM generate_series(0::bigint, :count - 1) AS i, CAST(:now AS timestamp) AS now_
"""

_POSTGRES_SCOPES = """
INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)
SELECT id, unnest(string_to_array(scopes_text, ' ')), organization_id, created_at
FROM api_keys WHERE organization_id = :org AND hint = 'kh_bench…0000'
"""

_POSTGRES_AUDIT = """
INSERT INTO audit_events (id, organization_id, occurred_at, action, api_key_id, details)
SELECT 'evt_' || substr(id, 5), organization_id, created_at, 'KEY_CREATED', id, '{}'
FROM api_keys WHERE organization_id = :org AND hint = 'kh_bench…0000'
"""

_POSTGRES_USAGE = """
INSERT INTO usage_buckets (granularity, bucket_start, api_key_id, organization_id, operation,
                           outcome, count)
SELECT 'DAY', CAST(:today AS timestamp) - make_interval(days => (substr(id, 5)::int % 30)),
       id,
       organization_id, 'GET /charge-points', 'VALID', 1 + substr(id, 5)::bigint % 97
FROM api_keys WHERE organization_id = :org AND hint = 'kh_bench…0000'
"""

# Each key's totals per bucket, as a flush writes them beside its buckets.
_KEY_USAGE = """
INSERT INTO key_usage (organization_id, granularity, bucket_start, api_key_id, requests, valid)
SELECT organization_id, granularity, bucket_start, api_key_id, SUM(count),
       SUM(CASE WHEN outcome = 'VALID' THEN count ELSE 0 END)
FROM usage_buckets WHERE organization_id = :org
GROUP BY organization_id, granularity, bucket_start, api_key_id
"""


async def _fill_postgres(engine: AsyncEngine, organization_id: str, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)  # keyhouse stores naive UTC
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    scopes = {f"s{n}": value for n, value in enumerate(SCOPE_SETS)}
    async with engine.begin() as connection:
        values = {"org": organization_id, "now": now, "step": STEP_SECONDS, "count": count}
        await connection.execute(text(_POSTGRES_KEYS), {**values, **scopes})
        await connection.execute(text(_POSTGRES_SCOPES), {"org": organization_id})
        await connection.execute(text(_POSTGRES_AUDIT), {"org": organization_id})
        await connection.execute(text(_POSTGRES_USAGE), {"org": organization_id, "today": today})
        await connection.execute(text(_KEY_USAGE), {"org": organization_id})
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE"))
        # The bulk writes' dirty pages written out now, not by a checkpoint amid the figures.
        await connection.execute(text("CHECKPOINT"))


async def _fill_sqlite(engine: AsyncEngine, organization_id: str, count: int) -> None:
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    keys = [_key_row(number, organization_id, now) for number in range(count)]
    columns = list(keys[0])
    events = [
        {
            "id": "evt_" + key["id"][4:],
            "organization_id": organization_id,
            "occurred_at": key["created_at"],
            "api_key_id": key["id"],
        }
        for key in keys
    ]
    scope_rows = [
        {
            "api_key_id": key["id"],
            "scope": scope,
            "organization_id": organization_id,
            "created_at": key["created_at"],
        }
        for key in keys
        for scope in key["scopes_text"].split()
    ]
    buckets = [
        {
            "bucket_start": today - timedelta(days=number % 30),
            "api_key_id": key["id"],
            "organization_id": organization_id,
            "count": 1 + number % 97,
        }
        for number, key in enumerate(keys)
    ]
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"INSERT INTO api_keys ({', '.join(columns)}) "  # noqa: S608 - our own names
                f"VALUES ({', '.join(':' + c for c in columns)})"
            ),
            _sqlite_values(keys),
        )
        await connection.execute(
            text(
                "INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)"
                " VALUES (:api_key_id, :scope, :organization_id, :created_at)"
            ),
            _sqlite_values(scope_rows),
        )
        await connection.execute(
            text(
                "INSERT INTO audit_events (id, organization_id, occurred_at, action, api_key_id,"
                " details) VALUES (:id, :organization_id, :occurred_at, 'KEY_CREATED',"
                " :api_key_id, '{}')"
            ),
            _sqlite_values(events),
        )
        await connection.execute(
            text(
                "INSERT INTO usage_buckets (granularity, bucket_start, api_key_id,"
                " organization_id, operation, outcome, count) VALUES ('DAY', :bucket_start,"
                " :api_key_id, :organization_id, 'GET /charge-points', 'VALID', :count)"
            ),
            _sqlite_values(buckets),
        )
        await connection.execute(text(_KEY_USAGE), {"org": organization_id})
        await connection.execute(text("ANALYZE"))


def _sqlite_values(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Datetimes as keyhouse stores them on SQLite (UTCDateTime: ISO text)."""
    return [
        {
            name: (
                value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                if isinstance(value, datetime)
                else value
            )
            for name, value in row.items()
        }
        for row in rows
    ]


# --- measuring ----------------------------------------------------------------------------------


class Dashboard:
    """One organization's dashboard, asked through the whole application in-process."""

    def __init__(self, client: httpx.AsyncClient, admin_key: str) -> None:
        self.client = client
        self.admin_key = admin_key

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"X-API-Key": self.admin_key},
        )
        answer = response.json()
        if response.status_code != 200 or answer.get("errors"):
            raise BenchmarkError(f"HTTP {response.status_code}: {response.text[:500]}")
        return answer["data"]

    async def verify(self, key: str) -> None:
        response = await self.client.post("/v1/keys/verify", json={"key": key})
        if not response.json().get("valid"):
            raise BenchmarkError(f"verify: {response.text[:300]}")


async def _timed(requests: int, ask: Callable[[int], Awaitable[Any]]) -> list[float]:
    await ask(-1)  # warm: the statement caches, the parsers
    timings = []
    for number in range(requests):
        started = time.perf_counter()
        await ask(number)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def _summary(timings: Sequence[float]) -> dict[str, float]:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p95": p95}


async def _deep_cursor(engine: AsyncEngine, organization_id: str, size: int) -> str:
    """The cursor 50 pages in (at 1k keys, as deep as the keys go with a page left)."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT created_at, id FROM api_keys WHERE organization_id = :org"
                    " ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET :skip"
                ),
                {"org": organization_id, "skip": min(PAGE * DEEP_PAGES, size - PAGE) - 1},
            )
        ).one()
    created = row[0] if isinstance(row[0], datetime) else datetime.fromisoformat(row[0])
    return Cursor(created.replace(tzinfo=created.tzinfo or UTC), row[1]).encode()


async def measure(
    dashboard: Dashboard,
    deep_after: str,
    requests: int,
    *,
    supersede: bool,
    engine: AsyncEngine,
) -> dict[str, Any]:
    """Every question of the table, ``requests`` times each; then the one-off supersession."""
    results: dict[str, Any] = {}
    to = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    usage_range = {"from": (to - timedelta(days=30)).isoformat(), "to": to.isoformat()}
    questions: dict[str, Callable[[int], Awaitable[Any]]] = {
        "keys page (first: 50, totalCount)": lambda _: dashboard.graphql(PAGE_QUERY),
        "keys page 50 pages deep": lambda _: dashboard.graphql(PAGE_QUERY, {"after": deep_after}),
        "filter {status: ACTIVE, scope: read:billing}": lambda _: dashboard.graphql(
            PAGE_QUERY, {"filter": {"status": "ACTIVE", "scope": "read:billing"}}
        ),
        "filter {expiringWithinDays: 7}": lambda _: dashboard.graphql(
            PAGE_QUERY, {"filter": {"expiringWithinDays": 7}}
        ),
        "organization { keyCounts }": lambda _: dashboard.graphql(COUNTS_QUERY),
        "auditLog (first: 50, totalCount)": lambda _: dashboard.graphql(AUDIT_QUERY),
        "usage byKey(first: 10), 30 days": lambda _: dashboard.graphql(BY_KEY_QUERY, usage_range),
    }
    for name, ask in questions.items():
        results[name] = _summary(await _timed(requests, ask))
    secrets_made: list[str] = []

    async def create(number: int) -> None:
        name = f"scale {number} {secrets.token_hex(4)}"
        data = await dashboard.graphql(
            CREATE_MUTATION, {"input": {"name": name, "scopes": ["read:billing"]}}
        )
        secrets_made.append(data["createApiKey"]["secret"])

    results["createApiKey"] = _summary(await _timed(requests, create))
    fresh = iter(secrets_made[1:])  # never verified yet: not in the cache
    results["verify, uncached"] = _summary(
        await _timed(requests - 1, lambda _: dashboard.verify(next(fresh)))
    )
    results["verify, cached"] = _summary(
        await _timed(requests, lambda _: dashboard.verify(secrets_made[1]))
    )
    if supersede:
        results[SUPERSEDE_ROW], results[SUPERSEDED_ROW] = await _supersede_all(dashboard, engine)
    return results


async def _supersede_all(
    dashboard: Dashboard, engine: AsyncEngine
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The creation's answer, then the time until the application's own worker has marked the
    last key it replaced (from the creation's start)."""
    policy = await dashboard.graphql(POLICY_MUTATION)
    started = time.perf_counter()
    data = await dashboard.graphql(
        CREATE_MUTATION, {"input": {"name": "the one key", "scopes": ["read:billing"]}}
    )
    elapsed = (time.perf_counter() - started) * 1000
    finished = math.nan  # not within 10 minutes
    for _ in range(SUPERSEDED_WAIT_LOOKS):
        if not await _supersession_pending(engine):
            finished = (time.perf_counter() - started) * 1000
            break
        await asyncio.sleep(0.05)
    superseded = len(data["createApiKey"]["supersededApiKeys"])
    created = {
        "median": elapsed,
        "p95": elapsed,
        "superseded": policy["updateKeyPolicy"]["keysToSupersede"],
        "listed": superseded,
    }
    return created, {"median": finished, "p95": finished}


async def _supersession_pending(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        found = await connection.execute(text("SELECT 1 FROM key_supersessions LIMIT 1"))
        return found.first() is not None


# --- one database at one size ----------------------------------------------------------------


async def _run_one(url: str, size: int, requests: int, supersede: bool) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        redis_url=None,
        default_rate_limit_requests=HUGE_RATE_LIMIT,
        default_rate_limit_per_seconds=1,
        usage_flush_interval_seconds=3600,
        secret_key=secrets.token_hex(32),  # the benchmark's own deployment, gone with it
    )
    runtime = Runtime.create(settings)
    try:
        await upgrade_to_head(runtime.engine)
        async with session_scope(runtime.sessionmaker) as session:
            created = await create_organization(
                session,
                "Scale",
                catalogue=runtime.catalogue,
                key_prefix=settings.key_prefix,
                broadcast=runtime.broadcast,
            )
        assert isinstance(created, OrganizationCreated)
        organization_id = created.organization.id
        started = time.monotonic()
        fill = _fill_sqlite if settings.is_sqlite else _fill_postgres
        await fill(runtime.engine, organization_id, size - 1)  # the admin key is one
        built = time.monotonic() - started
        print(f"  {size:,} keys written in {built:.1f}s", flush=True)
        deep_after = await _deep_cursor(runtime.engine, organization_id, size)
        app = create_app(runtime=runtime)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scale") as client:
                dashboard = Dashboard(client, created.admin_key.secret)
                results = await measure(
                    dashboard, deep_after, requests, supersede=supersede, engine=runtime.engine
                )
        return {"buildSeconds": built, "queries": results}
    finally:
        await runtime.engine.dispose()


async def _postgres_database(server_url: str, name: str, *, drop: bool) -> str:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if not drop:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return server_url.rpartition("/")[0] + "/" + name


def run_postgres(server_url: str, size: int, requests: int, supersede: bool) -> dict[str, Any]:
    name = f"keyhouse_scale_{size}"
    url = asyncio.run(_postgres_database(server_url, name, drop=False))
    try:
        return asyncio.run(_run_one(url, size, requests, supersede))
    finally:
        asyncio.run(_postgres_database(server_url, name, drop=True))


def run_sqlite(size: int, requests: int, supersede: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="keyhouse-scale-") as tmp:
        return asyncio.run(
            _run_one(f"sqlite+aiosqlite:///{tmp}/scale.db", size, requests, supersede)
        )


# --- report --------------------------------------------------------------------------------


def _size(value: str) -> int:
    return int(float(value.lower().replace("k", "e3").replace("m", "e6")))


def _sizes(value: str) -> list[int]:
    return [_size(part) for part in value.split(",") if part]


def _label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


def report(results: dict[str, dict[int, dict[str, Any]]]) -> None:
    columns = [(db, size) for db, by_size in results.items() for size in by_size]
    names = list(dict.fromkeys(n for db, size in columns for n in results[db][size]["queries"]))
    headers = ["query (median / p95 ms)", *(f"{db} {_label(size)}" for db, size in columns)]
    headers += [f"{db} ×" for db, by_size in results.items() if len(by_size) > 1]
    rows = []
    for name in names:
        row = [name]
        for db, size in columns:
            figures = results[db][size]["queries"].get(name)
            row.append(
                "-" if figures is None else f"{figures['median']:.1f} / {figures['p95']:.1f}"
            )
        for by_size in results.values():
            if len(by_size) > 1:
                small = by_size[min(by_size)]["queries"].get(name)
                large = by_size[max(by_size)]["queries"].get(name)
                ratio = (
                    None if small is None or large is None else large["median"] / small["median"]
                )
                row.append("-" if ratio is None else f"{ratio:.1f}")
        rows.append(row)
    print()
    print_table(headers, rows)
    print("× : median at the largest size / median at the smallest (target: within 3×)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres-sizes", default="1k,10k,100k,1M")
    parser.add_argument("--sqlite-sizes", default="1k,10k,100k")
    parser.add_argument("--requests", type=int, default=30, help="sequential requests per query")
    parser.add_argument(
        "--supersede-up-to",
        type=_size,
        default="1M",
        help="measure the supersession of every active key at sizes up to this one",
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a database on the server to run on (each size gets a database of its own)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        for db, sizes in (("PG", args.postgres_sizes), ("SQLite", args.sqlite_sizes)):
            for size in _sizes(sizes):
                print(f"{db}, {size:,} keys ...", flush=True)
                supersede = size <= args.supersede_up_to
                run = (
                    run_postgres(args.postgres_url, size, args.requests, supersede)
                    if db == "PG"
                    else run_sqlite(size, args.requests, supersede)
                )
                results.setdefault(db, {})[size] = run
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report(results)
    path = write_results(
        "scale", {"requests": args.requests, "results": json.loads(json.dumps(results))}
    )
    print(f"\nResults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
