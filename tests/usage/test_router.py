"""``GET /v1/usage.csv``: the ``usage`` query's figures as CSV, behind the same key, scope and
limits."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.runtime import Runtime
from tests.support import Tenant, gql, make_key

USAGE = """
query Usage($from: DateTime!, $to: DateTime!, $granularity: Granularity!, $apiKeyId: ID) {
  usage(from: $from, to: $to, granularity: $granularity, apiKeyId: $apiKeyId) {
    totals { requests valid rejected }
    series { start requests valid rejected }
    byKey(first: 100) { apiKeyId: apiKey { id } requests valid rejected }
    byOperation(first: 100) { operation requests valid rejected }
    byOutcome { outcome requests }
  }
}
"""


def _window() -> dict[str, str]:
    """Hourly, from three hours ago to the next hour: every use the test makes is inside."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {
        "from": (hour - timedelta(hours=3)).isoformat(),
        "to": (hour + timedelta(hours=1)).isoformat(),
        "granularity": "HOUR",
    }


async def _use(client: httpx.AsyncClient, key: str, operation: str, scopes: list[str]) -> None:
    body = {"key": key, "scopes": scopes, "operation": operation}
    assert (await client.post("/v1/keys/verify", json=body)).status_code == 200


async def _csv(
    client: httpx.AsyncClient, params: dict[str, str], key: str | None
) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return await client.get("/v1/usage.csv", params=params, headers=headers)


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text)))


def _counts(row: dict[str, str]) -> dict[str, int]:
    return {name: int(row[name]) for name in ("requests", "valid", "rejected")}


def _as_graphql(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The CSV's rows in the shape of the GraphQL answer, to compare the two."""
    of = {kind: [row for row in rows if row["kind"] == kind] for kind in {r["kind"] for r in rows}}
    return {
        "totals": _counts(of["total"][0]),
        "series": [{"start": row["start"], **_counts(row)} for row in of.get("series", [])],
        "byKey": [{"apiKeyId": {"id": row["key"]}, **_counts(row)} for row in of.get("key", [])],
        "byOperation": [
            {"operation": row["operation"], **_counts(row)} for row in of.get("operation", [])
        ],
        "byOutcome": [
            {"outcome": row["outcome"], "requests": int(row["requests"])}
            for row in of.get("outcome", [])
        ],
    }


async def test_the_csv_holds_what_the_usage_query_answers_for_the_same_range(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    billing = await make_key(runtime, tenant, "billing", ["read:billing"])
    for _ in range(3):
        await _use(client, billing.secret, "GET /invoices", ["read:billing"])
    await _use(client, billing.secret, "POST /invoices", ["write:billing"])
    await _use(client, tenant.admin_key, "GET /charge-points", [])
    await runtime.recorder.flush()
    window = _window()

    for params in (window, {**window, "apiKeyId": billing.id}):
        answer = await gql(client, USAGE, params, key=tenant.admin_key)
        rows = _rows(await _csv(client, params, tenant.admin_key))

        assert answer.errors == []
        assert _as_graphql(rows) == answer.data["usage"]
        assert [row["kind"] for row in rows][:2] == ["total", "series"]
    assert _counts(rows[0]) == {"requests": 4, "valid": 3, "rejected": 1}


async def test_the_key_travels_as_for_any_request_and_counts_as_a_use(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    for headers, params in (
        ({"X-API-Key": tenant.admin_key}, _window()),
        ({}, {**_window(), "key": tenant.admin_key}),
    ):
        response = await client.get("/v1/usage.csv", params=params, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
    await runtime.recorder.flush()

    rows = _rows(await _csv(client, _window(), tenant.admin_key))
    operations = {row["operation"]: row["requests"] for row in rows if row["kind"] == "operation"}
    assert operations == {"GET /v1/usage.csv": "2"}


@pytest.mark.parametrize("key", [None, "kh_not-a-key", "'{admin}'"])
async def test_a_refused_key_gets_the_reason_and_hint_as_json(
    client: httpx.AsyncClient, tenant: Tenant, key: str | None
) -> None:
    sent = None if key is None else key.replace("{admin}", tenant.admin_key)

    response = await _csv(client, _window(), sent)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="keyhouse"'
    body = response.json()
    assert set(body) == {"code", "message", "hint"}
    assert body["code"] in {"MISSING", "MALFORMED", "QUOTED", "NOT_FOUND"}
    assert body["message"]


async def test_a_key_without_read_analytics_is_told_which_scope_it_lacks(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    reader = await make_key(runtime, tenant, "reader", ["read:api_keys"])

    response = await _csv(client, _window(), reader.secret)

    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "INSUFFICIENT_SCOPE"
    assert "read:analytics" in body["message"]


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"from": "yesterday"}, "'from'"),
        ({"to": "2025-13-01"}, "'to'"),
        ({"granularity": "WEEK"}, "'granularity'"),
        ({"from": None}, "'from'"),
        ({"api_key_id": "x"}, "'api_key_id'"),
        ({"apiKeyId": "key\x00"}, "'apiKeyId'"),
        ({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}, "kept for"),
        ({"granularity": "MINUTE"}, "at most 24 hours"),
    ],
)
async def test_bad_parameters_are_a_422_saying_which(
    client: httpx.AsyncClient, tenant: Tenant, change: dict[str, str | None], argument: str
) -> None:
    merged: dict[str, str | None] = {**_window(), **change}
    params = {name: value for name, value in merged.items() if value is not None}
    if change.get("granularity") == "MINUTE":
        params["from"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()

    response = await _csv(client, params, tenant.admin_key)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "INVALID_INPUT"
    assert argument in body["message"]


async def test_a_from_after_to_gets_the_usage_query_s_own_message(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    window = _window()
    params = {**window, "from": window["to"], "to": window["from"]}

    response = await _csv(client, params, tenant.admin_key)

    assert response.status_code == 422
    assert response.json()["message"] == "'from' must be before 'to'."


async def test_another_organization_s_key_id_gives_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, other_tenant: Tenant
) -> None:
    await _use(client, other_tenant.admin_key, "GET /globex-secret", [])
    await runtime.recorder.flush()

    rows = _rows(
        await _csv(client, {**_window(), "apiKeyId": other_tenant.admin_key_id}, tenant.admin_key)
    )

    assert all(row["kind"] in {"total", "series"} for row in rows)
    assert all(_counts(row)["requests"] == 0 for row in rows)
    assert not any("globex" in row["operation"] for row in rows)


async def test_only_get_is_answered(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post("/v1/usage.csv", headers={"X-API-Key": tenant.admin_key})

    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize(
    "params",
    [
        {"from": "0001-01-01T00:00+01:00", "to": "0001-01-02T00:00Z", "granularity": "HOUR"},
        {"from": "9999-12-31T00:00Z", "to": "9999-12-31T23:59-05:00", "granularity": "HOUR"},
    ],
)
async def test_a_moment_past_the_calendar_once_in_utc_is_422_never_500(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, str]
) -> None:
    response = await client.get(
        "/v1/usage.csv", params=params, headers={"X-API-Key": tenant.admin_key}
    )

    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_INPUT"


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("%00", id="nul"),
        pytest.param("%ED%B2%80", id="lone-surrogate-bytes"),
        pytest.param("%1B%5B2J", id="escape"),
        pytest.param("%E2%80%AE", id="bidi-override"),
        pytest.param("k" * 20_000, id="huge"),  # URLs past 64 KiB never reach an app
    ],
)
async def test_a_hostile_parameter_is_a_short_422_and_never_a_500(
    client: httpx.AsyncClient, tenant: Tenant, hostile: str
) -> None:
    window = _window()
    query = (
        f"from={window['from']}&to={window['to']}&granularity=HOUR&apiKeyId=key_{hostile}"
    ).replace("+", "%2B")

    response = await client.get(f"/v1/usage.csv?{query}", headers={"X-API-Key": tenant.admin_key})

    # Bytes that are not UTF-8 are read as U+FFFD, an id no key has: an empty answer, not 500.
    assert response.status_code in (200, 422), response.text
    assert len(response.content) < 2_000
    if response.status_code == 422:
        assert response.json()["code"] == "INVALID_INPUT"
