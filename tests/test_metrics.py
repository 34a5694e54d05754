"""/metrics answers the on-call's questions, and no label carries what a request sent."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import forget_dead_workers
from app.runtime import Runtime
from tests.support import Tenant, gql, make_key

SERIES = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def _samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every keyhouse sample: name -> labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("keyhouse_"):
                labels = tuple(sorted(sample.labels.items()))
                found.setdefault(sample.name, {})[labels] = sample.value
    return found


async def _scrape(client: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return _samples(response.text)


def _value(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_verifications_are_counted_by_outcome_and_cache_result(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "reader")
    before = await _scrape(client)

    for _ in range(3):
        await client.post("/v1/keys/verify", json={"key": key.secret})
    await client.post("/v1/keys/verify", json={"key": key.secret, "scopes": ["read:billing"]})

    after = await _scrape(client)
    for outcome, more in (("VALID", 3), ("INSUFFICIENT_SCOPE", 1)):
        name = "keyhouse_verifications_total"
        assert _value(after, name, outcome=outcome) - _value(before, name, outcome=outcome) == more
    cache = "keyhouse_key_cache_requests_total"
    assert _value(after, cache, result="miss") - _value(before, cache, result="miss") == 1
    assert _value(after, cache, result="hit") - _value(before, cache, result="hit") == 3
    assert _value(after, "keyhouse_key_cache_entries") >= 1


async def test_requests_are_timed_by_route_and_status(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = await _scrape(client)

    await client.post("/v1/keys/verify", json={"key": tenant.admin_key})
    await client.get("/no/such/path/kh_secret")

    after = await _scrape(client)
    count = "keyhouse_http_request_duration_seconds_count"
    verify = {"route": "/v1/keys/verify", "status": "200"}
    assert _value(after, count, **verify) - _value(before, count, **verify) == 1
    other = {"route": "other", "status": "404"}
    assert _value(after, count, **other) - _value(before, count, **other) == 1


async def test_usage_buffer_and_flushes_are_visible(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    await client.post("/v1/keys/verify", json={"key": tenant.admin_key})
    waiting = await _scrape(client)
    assert _value(waiting, "keyhouse_usage_buffered_buckets") >= 1
    flushes = _value(waiting, "keyhouse_usage_flush_duration_seconds_count")

    await runtime.recorder.flush()

    flushed = await _scrape(client)
    assert _value(flushed, "keyhouse_usage_buffered_buckets") == 0
    assert _value(flushed, "keyhouse_usage_oldest_unflushed_seconds") == 0
    assert _value(flushed, "keyhouse_usage_flush_duration_seconds_count") == flushes + 1
    assert _value(flushed, "keyhouse_broadcast_connected") == 0  # no Redis in this test


async def test_graphql_operations_are_counted_by_dashboard_name_and_code(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    before = await _scrape(client)

    await gql(client, "query KeysPage { apiKeys(first: 1) { totalCount } }", key=tenant.admin_key)
    await gql(client, "query MyOwnScript { scopes { name } }", key=tenant.admin_key)
    await gql(client, "query KeysPage { apiKeys(first: 0) { totalCount } }", key=tenant.admin_key)

    after = await _scrape(client)
    name = "keyhouse_graphql_operations_total"
    for labels in (
        {"operation": "KeysPage", "code": "OK"},
        {"operation": "other", "code": "OK"},
        {"operation": "KeysPage", "code": "BAD_USER_INPUT"},
    ):
        assert _value(after, name, **labels) - _value(before, name, **labels) == 1


async def test_no_label_carries_what_a_request_sent(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "probe")
    hostile = "kh_" + "A" * 40
    await client.post("/v1/keys/verify", json={"key": key.secret, "operation": f"GET /x/{hostile}"})
    await client.post("/v1/keys/verify", json={"key": hostile})
    await client.get(f"/{hostile}")
    await client.post(
        "/graphql",
        content=json.dumps({"query": f"query {hostile} {{ scopes {{ name }} }}"}),
        headers={"X-API-Key": key.secret, "Content-Type": "application/json"},
    )

    text = (await client.get("/metrics")).text
    labels = {
        value
        for line in text.splitlines()
        if line.startswith("keyhouse_") and (match := SERIES.match(line)) and match.group(2)
        for value in re.findall(r'="([^"]*)"', match.group(2))
    }
    assert hostile not in text
    assert key.secret not in text
    assert key.hint not in text
    assert all(re.fullmatch(r"[A-Za-z0-9_./+]+", value) for value in labels), labels


def test_the_gauges_of_a_worker_that_died_are_dropped(tmp_path: Path) -> None:
    dead_pid = 2**22 + 1  # above Linux's largest pid: no such process
    for pid in (dead_pid, os.getpid()):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")

    forget_dead_workers(str(tmp_path))

    # Its counts stay in the sums; its state does not.
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"counter_{dead_pid}.db",
        f"gauge_livesum_{os.getpid()}.db",
    ]
