"""Usage by organization for billing: ``organizationsUsage`` and ``GET /v1/operator/usage.csv``,
read from the rollups, exact over whole buckets, operator keys only."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.auth.outcomes import Outcome
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, gql, make_operator_key, make_tenant, snapshot

USAGE = """
query Usage($from: DateTime!, $to: DateTime!, $first: Int, $after: String) {
  organizationsUsage(from: $from, to: $to, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { organization { id name } requests valid rejected }
  }
}
"""

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def operator(runtime: Runtime) -> IssuedKey:
    return await make_operator_key(runtime)


def use(runtime: Runtime, tenant: Tenant, at: datetime, outcome: Outcome, times: int = 1) -> None:
    for _ in range(times):
        runtime.recorder.record(
            tenant.admin_key_id, tenant.organization_id, "verify", outcome, at.timestamp()
        )


@pytest.fixture
async def billed(runtime: Runtime, tenant: Tenant) -> dict[str, Tenant]:
    """Acme: 3 valid and 1 refused use yesterday at 10:30, 2 valid two days ago. Globex: 5 valid
    yesterday at 23:59. Initech: no use at all."""
    globex = await make_tenant(runtime, "Globex")
    initech = await make_tenant(runtime, "Initech")
    yesterday = TODAY - timedelta(days=1)
    use(runtime, tenant, yesterday + timedelta(hours=10, minutes=30), Outcome.VALID, 3)
    use(runtime, tenant, yesterday + timedelta(hours=10, minutes=30), Outcome.REVOKED)
    use(runtime, tenant, TODAY - timedelta(days=2), Outcome.VALID, 2)
    use(runtime, globex, yesterday + timedelta(hours=23, minutes=59), Outcome.VALID, 5)
    await runtime.recorder.flush()
    return {"Acme": tenant, "Globex": globex, "Initech": initech}


async def ask(
    client: httpx.AsyncClient, key: str, start: datetime, end: datetime, **more: Any
) -> Any:
    variables = {"from": start.isoformat(), "to": end.isoformat(), **more}
    return await gql(client, USAGE, variables, key=key)


def figures(result: Any) -> list[tuple[str, int, int, int]]:
    assert result.errors == [], result.body
    return [
        (node["organization"]["name"], node["requests"], node["valid"], node["rejected"])
        for node in result.data["organizationsUsage"]["nodes"]
    ]


async def test_each_organization_with_uses_largest_first(
    client: httpx.AsyncClient, operator: IssuedKey, billed: dict[str, Tenant]
) -> None:
    result = await ask(client, operator.secret, TODAY - timedelta(days=3), TODAY)

    assert figures(result) == [("Acme", 6, 5, 1), ("Globex", 5, 5, 0)]
    assert result.data["organizationsUsage"]["totalCount"] == 2


async def test_a_period_counts_exactly_the_buckets_inside_it(
    client: httpx.AsyncClient, operator: IssuedKey, billed: dict[str, Tenant]
) -> None:
    yesterday = TODAY - timedelta(days=1)

    day = await ask(client, operator.secret, yesterday, TODAY)
    morning = await ask(
        client, operator.secret, yesterday + timedelta(hours=10), yesterday + timedelta(hours=11)
    )
    minute = await ask(
        client,
        operator.secret,
        yesterday + timedelta(hours=23, minutes=58),
        yesterday + timedelta(hours=23, minutes=59),
    )

    assert figures(day) == [("Globex", 5, 5, 0), ("Acme", 4, 3, 1)]
    assert figures(morning) == [("Acme", 4, 3, 1)]
    assert figures(minute) == []


async def test_pages_follow_the_largest_first_order(
    client: httpx.AsyncClient, operator: IssuedKey, billed: dict[str, Tenant]
) -> None:
    start, end = TODAY - timedelta(days=3), TODAY

    first = await ask(client, operator.secret, start, end, first=1)
    cursor = first.data["organizationsUsage"]["pageInfo"]["endCursor"]
    second = await ask(client, operator.secret, start, end, first=1, after=cursor)

    assert figures(first) == [("Acme", 6, 5, 1)]
    assert first.data["organizationsUsage"]["pageInfo"]["hasNextPage"] is True
    assert figures(second) == [("Globex", 5, 5, 0)]
    assert second.data["organizationsUsage"]["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    ("start", "end", "argument"),
    [
        (TODAY, TODAY, "from"),
        (TODAY + timedelta(seconds=30), TODAY + timedelta(days=1), "from"),
        (TODAY, TODAY + timedelta(days=1, seconds=1), "to"),
        # Minute buckets are kept 72 hours: ten days back needs whole hours.
        (TODAY - timedelta(days=10, minutes=1), TODAY, "from"),
        (TODAY - timedelta(days=4000), TODAY, "to"),
    ],
)
async def test_a_period_that_cannot_be_counted_exactly_is_refused(
    client: httpx.AsyncClient, operator: IssuedKey, start: datetime, end: datetime, argument: str
) -> None:
    result = await ask(client, operator.secret, start, end)

    [error] = result.errors
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["argument"] == argument


async def test_a_bad_cursor_is_refused(client: httpx.AsyncClient, operator: IssuedKey) -> None:
    result = await ask(client, operator.secret, TODAY - timedelta(days=1), TODAY, after="zz")

    assert result.error_codes == ["BAD_USER_INPUT"]


async def test_an_organization_key_is_forbidden_the_figures_of_every_organization(
    client: httpx.AsyncClient, tenant: Tenant, billed: dict[str, Tenant]
) -> None:
    result = await ask(client, tenant.admin_key, TODAY - timedelta(days=3), TODAY)

    assert result.errors[0]["extensions"] == {"code": "FORBIDDEN", "requiredScope": "operator"}
    assert result.data is None


# --- CSV ----------------------------------------------------------------------------------------


async def csv_of(
    client: httpx.AsyncClient, key: str | None, start: datetime, end: datetime
) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    params = {"from": start.isoformat(), "to": end.isoformat()}
    return await client.get("/v1/operator/usage.csv", params=params, headers=headers)


async def test_the_csv_holds_what_the_query_answers(
    client: httpx.AsyncClient, operator: IssuedKey, billed: dict[str, Tenant]
) -> None:
    start, end = TODAY - timedelta(days=3), TODAY

    response = await csv_of(client, operator.secret, start, end)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["name"], r["requests"], r["valid"], r["rejected"]) for r in rows] == [
        ("Acme", "6", "5", "1"),
        ("Globex", "5", "5", "0"),
    ]
    assert rows[0]["organization_id"] == billed["Acme"].organization_id


async def test_a_name_that_reads_as_a_formula_is_written_as_text(
    client: httpx.AsyncClient, runtime: Runtime, operator: IssuedKey
) -> None:
    sneaky = await make_tenant(runtime, '=HYPERLINK("http://x.test")')
    use(runtime, sneaky, TODAY - timedelta(hours=1), Outcome.VALID)
    await runtime.recorder.flush()

    response = await csv_of(client, operator.secret, TODAY - timedelta(days=1), TODAY)

    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["name"] == '\'=HYPERLINK("http://x.test")'


async def test_the_csv_needs_an_operator_key(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, operator: IssuedKey
) -> None:
    before = await snapshot(runtime)
    start, end = TODAY - timedelta(days=1), TODAY

    organization_key = await csv_of(client, tenant.admin_key, start, end)
    no_key = await csv_of(client, None, start, end)
    unknown = await csv_of(client, "kho_" + "A" * 32 + "AAAAAA", start, end)

    assert organization_key.status_code == 403
    assert organization_key.json()["code"] == "FORBIDDEN"
    assert organization_key.json()["requiredScope"] == "operator"
    assert no_key.status_code == 401
    assert no_key.json()["code"] == "MISSING"
    assert unknown.status_code == 401
    assert await snapshot(runtime) == before


@pytest.mark.parametrize(
    "query",
    [
        "from=2026-11-01",
        "from=2026-11-01T00:00:00Z&to=x",
        "from=a&to=b&granularity=DAY",
        "to=1",
        # Hostile values: a NUL, a lone surrogate's bytes, an escape sequence, a huge value.
        "from=2026-11-01%00&to=2026-11-02",
        "from=%ED%A0%80&to=2026-11-02",
        "from=%1B%5B31m&to=2026-11-02",
        "from=" + "9" * 20_000 + "&to=2026-11-02",
    ],
)
async def test_bad_parameters_get_a_short_answer(
    client: httpx.AsyncClient, operator: IssuedKey, query: str
) -> None:
    response = await client.get(
        f"/v1/operator/usage.csv?{query}", headers={"X-API-Key": operator.secret}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"
    assert len(response.text) < 1_000
