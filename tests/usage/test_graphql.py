"""``usage`` and ``ApiKey.usage`` / ``ApiKey.lastUsedAt`` over GraphQL, fed by real
verifications (``POST /v1/keys/verify`` and GraphQL requests) and a flush."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.outcomes import Outcome
from app.auth.principal import Caller
from app.auth.secret import hint_for
from app.keys import revocation as keys_revocation
from app.kit.db import session_scope
from app.kit.errors import UserError
from app.kit.ids import new_id
from app.runtime import Runtime
from tests.support import IssuedKey, Tenant, count_statements, gql, make_key

FRONTEND_QUERIES = Path(__file__).resolve().parents[2] / "frontend-queries"

USAGE = """
query Usage(
  $from: DateTime!
  $to: DateTime!
  $granularity: Granularity!
  $apiKeyId: ID
  $operation: String
  $outcome: UsageOutcome
  $first: Int! = 10
) {
  usage(
    from: $from
    to: $to
    granularity: $granularity
    apiKeyId: $apiKeyId
    operation: $operation
    outcome: $outcome
  ) {
    totals { requests valid rejected }
    series { start requests valid rejected }
    byKey(first: $first) { apiKey { id name hint status } requests valid rejected lastUsedAt }
    byOperation(first: $first) { operation requests valid rejected }
    byOutcome { outcome requests }
  }
}
"""

TOTALS = """
query Totals($from: DateTime!, $to: DateTime!, $granularity: Granularity!, $operation: String) {
  usage(from: $from, to: $to, granularity: $granularity, operation: $operation) {
    totals { requests }
  }
}
"""


def _hour_start(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@pytest.fixture
def moment(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Every use recorded during the test happens at this moment, 5 min 7 s into the hour that
    began two hours ago: the recorder's clock is pinned so that the expected buckets do not
    depend on when the test runs (nor on a minute or hour boundary passing during it)."""
    pinned = _hour_start(datetime.now(UTC)) - timedelta(hours=2) + timedelta(minutes=5, seconds=7)
    record = runtime.recorder.record

    def record_at_moment(
        key_id: str, organization_id: str, operation: str, outcome: Outcome, at: float
    ) -> None:
        record(key_id, organization_id, operation, outcome, pinned.timestamp())

    monkeypatch.setattr(runtime.recorder, "record", record_at_moment)
    return pinned


def _window(moment: datetime) -> dict[str, Any]:
    """Four hours [moment's hour - 2 h, moment's hour + 2 h), hourly: the uses land in the third."""
    start = _hour_start(moment) - timedelta(hours=2)
    return {
        "from": _iso(start),
        "to": _iso(start + timedelta(hours=4)),
        "granularity": "HOUR",
    }


def _zero_series(moment: datetime) -> list[dict[str, Any]]:
    start = _hour_start(moment) - timedelta(hours=2)
    return [
        {
            "start": _iso(start + timedelta(hours=step)),
            "requests": 0,
            "valid": 0,
            "rejected": 0,
        }
        for step in range(4)
    ]


async def _verify(
    client: httpx.AsyncClient, key: str, operation: str, scopes: tuple[str, ...] = ()
) -> str:
    response = await client.post(
        "/v1/keys/verify", json={"key": key, "scopes": list(scopes), "operation": operation}
    )
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


@dataclass(frozen=True)
class AcmeUsage:
    """Acme's keys and what was done with them (Globex used its own key meanwhile)."""

    admin: IssuedKey
    billing: IssuedKey
    retired: IssuedKey
    charger: IssuedKey
    retired_at: datetime


@pytest.fixture
async def acme(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    moment: datetime,
) -> AcmeUsage:
    billing = await make_key(runtime, tenant, "billing-sync", ["read:billing"])
    retired = await make_key(runtime, tenant, "old-integration", ["read:charge_points"])
    charger = await make_key(runtime, tenant, "charger-app", ["read:charge_points"])
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    async with session_scope(runtime.sessionmaker) as session:
        revoked = await keys_revocation.revoke_key(
            session, caller, retired.id, broadcast=runtime.broadcast
        )
    assert not isinstance(revoked, UserError)
    assert revoked.revoked_at is not None

    for _ in range(3):
        assert await _verify(client, billing.secret, "GET /invoices", ("read:billing",)) == "VALID"
    for _ in range(2):
        code = await _verify(client, billing.secret, "POST /invoices", ("write:billing",))
        assert code == "INSUFFICIENT_SCOPE"
    for _ in range(3):
        assert await _verify(client, retired.secret, "GET /charge-points") == "REVOKED"
    for _ in range(2):
        assert await _verify(client, charger.secret, "GET /charge-points") == "VALID"
    page = await gql(
        client,
        "query KeysPage { apiKeys { totalCount } }",
        key=tenant.admin_key,
        operation_name="KeysPage",
    )
    assert page.errors == []
    for _ in range(4):
        assert await _verify(client, other_tenant.admin_key, "GET /globex-secret") == "VALID"
    assert await _verify(client, "kh_malformed", "GET /invoices") == "MALFORMED"
    await runtime.recorder.flush()

    admin = IssuedKey(
        tenant.admin_key_id,
        tenant.admin_key,
        hint_for(tenant.admin_key, runtime.settings.key_prefix),
    )
    return AcmeUsage(admin, billing, retired, charger, revoked.revoked_at)


def _key(key: IssuedKey, name: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {"id": key.id, "name": name, "hint": key.hint, "status": status}


async def test_usage_answers_totals_series_and_breakdowns_in_the_documented_shape(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(client, USAGE, _window(moment), key=tenant.admin_key)

    series = _zero_series(moment)
    series[2] = {"start": series[2]["start"], "requests": 11, "valid": 6, "rejected": 5}
    used = _iso(moment)
    assert result.errors == []
    assert result.data == {
        "usage": {
            "totals": {"requests": 11, "valid": 6, "rejected": 5},
            "series": series,
            "byKey": [
                {
                    "apiKey": _key(acme.billing, "billing-sync"),
                    "requests": 5,
                    "valid": 3,
                    "rejected": 2,
                    "lastUsedAt": used,
                },
                {
                    "apiKey": _key(acme.retired, "old-integration", "REVOKED"),
                    "requests": 3,
                    "valid": 0,
                    "rejected": 3,
                    "lastUsedAt": None,
                },
                {
                    "apiKey": _key(acme.charger, "charger-app"),
                    "requests": 2,
                    "valid": 2,
                    "rejected": 0,
                    "lastUsedAt": used,
                },
                {
                    "apiKey": _key(acme.admin, "admin"),
                    "requests": 1,
                    "valid": 1,
                    "rejected": 0,
                    "lastUsedAt": used,
                },
            ],
            "byOperation": [
                {"operation": "GET /charge-points", "requests": 5, "valid": 2, "rejected": 3},
                {"operation": "GET /invoices", "requests": 3, "valid": 3, "rejected": 0},
                {"operation": "POST /invoices", "requests": 2, "valid": 0, "rejected": 2},
                {"operation": "graphql:KeysPage", "requests": 1, "valid": 1, "rejected": 0},
            ],
            "byOutcome": [
                {"outcome": "VALID", "requests": 6},
                {"outcome": "REVOKED", "requests": 3},
                {"outcome": "INSUFFICIENT_SCOPE", "requests": 2},
            ],
        }
    }


async def test_series_has_one_zero_filled_point_per_minute_from_from_to_to(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    start = _hour_start(datetime.now(UTC)) - timedelta(hours=3)
    variables = {
        "from": _iso(start),
        "to": _iso(start + timedelta(minutes=90)),
        "granularity": "MINUTE",
    }

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    assert result.errors == []
    assert result.data["usage"]["series"] == [
        {
            "start": _iso(start + timedelta(minutes=step)),
            "requests": 0,
            "valid": 0,
            "rejected": 0,
        }
        for step in range(90)
    ]


async def test_series_starts_at_the_bucket_holding_from(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    start = _hour_start(datetime.now(UTC)) - timedelta(hours=5)
    variables = {
        "from": _iso(start + timedelta(minutes=30)),
        "to": _iso(start + timedelta(hours=3)),
        "granularity": "HOUR",
    }

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    assert [point["start"] for point in result.data["usage"]["series"]] == [
        _iso(start + timedelta(hours=step)) for step in range(3)
    ]


async def test_a_range_given_with_a_utc_offset_is_answered_in_utc_buckets(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    start = _hour_start(datetime.now(UTC)) - timedelta(hours=5)
    local = start.astimezone(timezone(timedelta(hours=2)))
    variables = {
        "from": local.isoformat(),
        "to": (local + timedelta(hours=2)).isoformat(),
        "granularity": "HOUR",
    }

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    assert [point["start"] for point in result.data["usage"]["series"]] == [
        _iso(start),
        _iso(start + timedelta(hours=1)),
    ]


async def test_by_key_first_keeps_only_the_most_used_keys(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(client, USAGE, {**_window(moment), "first": 2}, key=tenant.admin_key)

    assert [row["apiKey"]["id"] for row in result.data["usage"]["byKey"]] == [
        acme.billing.id,
        acme.retired.id,
    ]


async def test_by_operation_first_keeps_only_the_most_used_operations(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(client, USAGE, {**_window(moment), "first": 1}, key=tenant.admin_key)

    assert result.data["usage"]["byOperation"] == [
        {"operation": "GET /charge-points", "requests": 5, "valid": 2, "rejected": 3}
    ]


async def test_usage_of_one_key_counts_only_that_keys_uses(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    variables = {**_window(moment), "apiKeyId": acme.charger.id}

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    usage = result.data["usage"]
    assert usage["totals"] == {"requests": 2, "valid": 2, "rejected": 0}
    assert [row["apiKey"]["id"] for row in usage["byKey"]] == [acme.charger.id]


async def test_usage_of_one_operation_counts_only_that_operation(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    variables = {**_window(moment), "operation": "GET /charge-points"}

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    usage = result.data["usage"]
    assert usage["totals"] == {"requests": 5, "valid": 2, "rejected": 3}
    assert usage["byOutcome"] == [
        {"outcome": "REVOKED", "requests": 3},
        {"outcome": "VALID", "requests": 2},
    ]


async def test_usage_of_one_outcome_counts_only_that_outcome(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    variables = {**_window(moment), "outcome": "INSUFFICIENT_SCOPE"}

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    usage = result.data["usage"]
    assert usage["totals"] == {"requests": 2, "valid": 0, "rejected": 2}
    assert usage["byOperation"] == [
        {"operation": "POST /invoices", "requests": 2, "valid": 0, "rejected": 2}
    ]


async def test_uses_of_a_superseded_key_are_reported_by_outcome(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, moment: datetime
) -> None:
    replaced = await make_key(runtime, tenant, "replaced")
    runtime.recorder.record(
        replaced.id, tenant.organization_id, "GET /x", Outcome.SUPERSEDED, moment.timestamp()
    )
    await runtime.recorder.flush()

    result = await gql(client, USAGE, _window(moment), key=tenant.admin_key)

    assert result.errors == []
    assert result.data["usage"]["byOutcome"] == [{"outcome": "SUPERSEDED", "requests": 1}]


def _ago(**delta: float) -> str:
    moment = _iso(datetime.now(UTC) - timedelta(**delta))
    assert moment is not None
    return moment


def _now() -> str:
    return _ago(seconds=0)


HOUR_AGO = _ago(hours=1)
RANGES_REFUSED = [
    pytest.param("HOUR", _ago(hours=1), _ago(hours=2), "'from' must be before 'to'", id="reversed"),
    pytest.param("HOUR", HOUR_AGO, HOUR_AGO, "'from' must be before 'to'", id="empty"),
    pytest.param(
        "MINUTE", _ago(hours=24, minutes=1), _now(), "at most 24 hours", id="minute-over-24h"
    ),
    pytest.param("HOUR", _ago(days=90, hours=1), _now(), "at most 90 days", id="hour-over-90d"),
    pytest.param("DAY", _ago(days=3651), _now(), "at most 3650 days", id="day-over-3650d"),
]


@pytest.mark.parametrize(("granularity", "start", "end", "message"), RANGES_REFUSED)
async def test_a_range_beyond_the_limits_is_bad_user_input(
    client: httpx.AsyncClient,
    tenant: Tenant,
    granularity: str,
    start: str,
    end: str,
    message: str,
) -> None:
    variables = {"from": start, "to": end, "granularity": granularity}

    result = await gql(client, TOTALS, variables, key=tenant.admin_key)

    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert message in result.errors[0]["message"]


RANGES_AT_THE_LIMIT = [
    pytest.param("MINUTE", timedelta(hours=24), id="minute-24h"),
    pytest.param("HOUR", timedelta(days=90), id="hour-90d"),
    pytest.param("DAY", timedelta(days=3650), id="day-3650d"),
]


@pytest.mark.parametrize(("granularity", "span"), RANGES_AT_THE_LIMIT)
async def test_a_range_of_exactly_the_longest_span_is_answered(
    client: httpx.AsyncClient, tenant: Tenant, granularity: str, span: timedelta
) -> None:
    end = datetime.now(UTC)
    variables = {"from": _iso(end - span), "to": _iso(end), "granularity": granularity}

    result = await gql(client, TOTALS, variables, key=tenant.admin_key)

    assert result.errors == []
    assert result.data == {"usage": {"totals": {"requests": 0}}}


RANGES_BEFORE_RETENTION = [
    pytest.param("MINUTE", _ago(hours=73), _ago(hours=60), "kept for 3 days", id="minute"),
    pytest.param("HOUR", _ago(days=121), _ago(days=100), "kept for 120 days", id="hour"),
    pytest.param("DAY", _ago(days=3661), _ago(days=3600), "kept for 3660 days", id="day"),
]


@pytest.mark.parametrize(("granularity", "start", "end", "message"), RANGES_BEFORE_RETENTION)
async def test_a_range_starting_before_the_retained_data_says_how_long_data_is_kept(
    client: httpx.AsyncClient,
    tenant: Tenant,
    granularity: str,
    start: str,
    end: str,
    message: str,
) -> None:
    variables = {"from": start, "to": end, "granularity": granularity}

    result = await gql(client, TOTALS, variables, key=tenant.admin_key)

    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert message in result.errors[0]["message"]


@pytest.mark.parametrize("breakdown", ["byKey", "byOperation"])
@pytest.mark.parametrize("first", [0, 101])
async def test_a_breakdown_size_outside_1_to_100_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, moment: datetime, breakdown: str, first: int
) -> None:
    query = f"""
    query Breakdown($from: DateTime!, $to: DateTime!, $granularity: Granularity!, $first: Int!) {{
      usage(from: $from, to: $to, granularity: $granularity) {{
        {breakdown}(first: $first) {{ requests }}
      }}
    }}
    """
    variables = {**_window(moment), "first": first}

    result = await gql(client, query, variables, key=tenant.admin_key)

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert "'first' must be between 1 and 100" in result.errors[0]["message"]


async def test_an_operation_filter_over_200_characters_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, moment: datetime
) -> None:
    variables = {**_window(moment), "operation": "x" * 201}

    result = await gql(client, TOTALS, variables, key=tenant.admin_key)

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert "at most 200 characters" in result.errors[0]["message"]


@pytest.mark.parametrize(
    "api_key_id",
    [
        pytest.param(new_id("key"), id="unknown"),
        pytest.param("not-a-key-id'; --", id="malformed"),
        pytest.param("k" * 4_000, id="very-long"),
        pytest.param("OTHER-ORGANIZATION", id="other-organizations-key"),
    ],
)
async def test_usage_of_a_key_that_is_not_the_callers_is_empty(
    client: httpx.AsyncClient,
    tenant: Tenant,
    other_tenant: Tenant,
    acme: AcmeUsage,
    moment: datetime,
    api_key_id: str,
) -> None:
    if api_key_id == "OTHER-ORGANIZATION":
        api_key_id = other_tenant.admin_key_id  # which has uses in the same hour
    variables = {**_window(moment), "apiKeyId": api_key_id}

    result = await gql(client, USAGE, variables, key=tenant.admin_key)

    assert result.errors == []
    assert result.data == {
        "usage": {
            "totals": {"requests": 0, "valid": 0, "rejected": 0},
            "series": _zero_series(moment),
            "byKey": [],
            "byOperation": [],
            "byOutcome": [],
        }
    }


async def test_usage_never_shows_another_organizations_uses(
    client: httpx.AsyncClient, other_tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(client, USAGE, _window(moment), key=other_tenant.admin_key)

    usage = result.data["usage"]
    assert usage["totals"] == {"requests": 4, "valid": 4, "rejected": 0}
    assert [row["apiKey"]["id"] for row in usage["byKey"]] == [other_tenant.admin_key_id]
    assert [row["operation"] for row in usage["byOperation"]] == ["GET /globex-secret"]


@pytest.fixture
async def key_without_analytics(runtime: Runtime, tenant: Tenant) -> IssuedKey:
    return await make_key(runtime, tenant, "keys-only", ["read:api_keys"])


async def test_usage_without_read_analytics_is_forbidden(
    client: httpx.AsyncClient, key_without_analytics: IssuedKey, moment: datetime
) -> None:
    result = await gql(client, TOTALS, _window(moment), key=key_without_analytics.secret)

    assert result.data is None
    assert [error["extensions"] for error in result.errors] == [
        {"code": "FORBIDDEN", "requiredScope": "read:analytics"}
    ]


async def test_key_usage_without_read_analytics_is_forbidden(
    client: httpx.AsyncClient, key_without_analytics: IssuedKey, moment: datetime
) -> None:
    query = """
    query KeyUsage($from: DateTime!, $to: DateTime!) {
      apiKeys { nodes { id usage(from: $from, to: $to) { requests } } }
    }
    """
    window = _window(moment)
    variables = {"from": window["from"], "to": window["to"]}

    result = await gql(client, query, variables, key=key_without_analytics.secret)

    assert result.errors != []
    for error in result.errors:
        assert error["path"][-1] == "usage"
        assert error["extensions"] == {"code": "FORBIDDEN", "requiredScope": "read:analytics"}


KEYS_WITH_USAGE = """
query KeysWithUsage($first: Int!, $from: DateTime!, $to: DateTime!) {
  apiKeys(first: $first) {
    nodes { id name lastUsedAt usage(from: $from, to: $to) { requests valid rejected } }
  }
}
"""


async def test_key_usage_counts_each_keys_uses_over_the_range(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    window = _window(moment)
    variables = {"first": 10, "from": window["from"], "to": window["to"]}

    result = await gql(client, KEYS_WITH_USAGE, variables, key=tenant.admin_key)

    assert result.errors == []
    assert {node["name"]: node["usage"] for node in result.data["apiKeys"]["nodes"]} == {
        "admin": {"requests": 1, "valid": 1, "rejected": 0},
        "billing-sync": {"requests": 5, "valid": 3, "rejected": 2},
        "old-integration": {"requests": 3, "valid": 0, "rejected": 3},
        "charger-app": {"requests": 2, "valid": 2, "rejected": 0},
    }


async def test_last_used_at_includes_a_use_not_yet_flushed(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, moment: datetime
) -> None:
    used = await make_key(runtime, tenant, "used")
    unused = await make_key(runtime, tenant, "unused")
    assert await _verify(client, used.secret, "GET /x") == "VALID"
    query = "query LastUsed($id: ID!) { apiKey(id: $id) { lastUsedAt } }"

    used_result = await gql(client, query, {"id": used.id}, key=tenant.admin_key)
    unused_result = await gql(client, query, {"id": unused.id}, key=tenant.admin_key)

    assert used_result.data == {"apiKey": {"lastUsedAt": _iso(moment)}}
    assert unused_result.data == {"apiKey": {"lastUsedAt": None}}


async def _page_statements(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, first: int
) -> int:
    now = datetime.now(UTC)
    variables = {"first": first, "from": _iso(now - timedelta(hours=1)), "to": _iso(now)}
    with count_statements(runtime.engine) as statements:
        result = await gql(client, KEYS_WITH_USAGE, variables, key=tenant.admin_key)
    assert result.errors == []
    assert len(result.data["apiKeys"]["nodes"]) == first
    return len(statements)


async def test_a_page_of_keys_with_usage_and_last_used_at_costs_the_same_statements_for_any_size(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    for number in range(50):
        key = await make_key(runtime, tenant, f"key-{number:02d}")
        runtime.recorder.record(
            key.id, tenant.organization_id, "GET /x", Outcome.VALID, datetime.now(UTC).timestamp()
        )
    await runtime.recorder.flush()
    await _page_statements(client, runtime, tenant, 1)  # the admin key is now in the auth cache

    five = await _page_statements(client, runtime, tenant, 5)
    fifty = await _page_statements(client, runtime, tenant, 50)

    assert five == fifty


async def test_verify_refuses_an_operation_label_over_200_characters(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    response = await client.post(
        "/v1/keys/verify", json={"key": tenant.admin_key, "operation": "x" * 201}
    )

    assert response.status_code == 422
    assert "operation" in response.json()["message"]
    assert runtime.recorder.pending_buckets == 0


async def test_verify_records_an_operation_label_of_200_characters_whole(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, moment: datetime
) -> None:
    label = "GET /" + "x" * 195
    assert await _verify(client, tenant.admin_key, label) == "VALID"
    await runtime.recorder.flush()

    result = await gql(client, USAGE, _window(moment), key=tenant.admin_key)

    assert [row["operation"] for row in result.data["usage"]["byOperation"]] == [label]


async def test_a_graphql_operation_name_over_100_characters_is_truncated_in_the_label(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, moment: datetime
) -> None:
    name = "Q" * 150
    named = await gql(
        client, f"query {name} {{ scopes {{ name }} }}", key=tenant.admin_key, operation_name=name
    )
    assert named.errors == []
    await runtime.recorder.flush()

    result = await gql(client, USAGE, _window(moment), key=tenant.admin_key)

    labels = [row["operation"] for row in result.data["usage"]["byOperation"]]
    assert labels == ["graphql:" + "Q" * 100]


def _frontend_query(name: str) -> str:
    return (FRONTEND_QUERIES / name).read_text()


async def test_the_keys_used_after_revocation_view_lists_a_revoked_key_still_called(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    window = _window(moment)
    variables = {"from": window["from"], "to": window["to"]}

    result = await gql(
        client,
        _frontend_query("KeysUsedAfterRevocation.graphql"),
        variables,
        key=tenant.admin_key,
    )

    assert result.errors == []
    assert result.data == {
        "usage": {
            "byKey": [
                {
                    "apiKey": {
                        **_key(acme.retired, "old-integration", "REVOKED"),
                        "revokedAt": _iso(acme.retired_at),
                    },
                    "requests": 3,
                    "lastUsedAt": None,
                }
            ]
        }
    }


async def test_the_usage_chart_query_draws_totals_series_and_outcomes(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(
        client, _frontend_query("UsageChart.graphql"), _window(moment), key=tenant.admin_key
    )

    series = _zero_series(moment)
    series[2] = {"start": series[2]["start"], "requests": 11, "valid": 6, "rejected": 5}
    assert result.errors == []
    assert result.data == {
        "usage": {
            "totals": {"requests": 11, "valid": 6, "rejected": 5},
            "series": series,
            "byOutcome": [
                {"outcome": "VALID", "requests": 6},
                {"outcome": "REVOKED", "requests": 3},
                {"outcome": "INSUFFICIENT_SCOPE", "requests": 2},
            ],
        }
    }


async def test_the_usage_breakdowns_query_lists_the_top_keys_and_operations(
    client: httpx.AsyncClient, tenant: Tenant, acme: AcmeUsage, moment: datetime
) -> None:
    result = await gql(
        client,
        _frontend_query("UsageBreakdowns.graphql"),
        {**_window(moment), "first": 2},
        key=tenant.admin_key,
    )

    assert result.errors == []
    assert result.data == {
        "usage": {
            "byKey": [
                {
                    "apiKey": _key(acme.billing, "billing-sync"),
                    "requests": 5,
                    "valid": 3,
                    "rejected": 2,
                },
                {
                    "apiKey": _key(acme.retired, "old-integration", "REVOKED"),
                    "requests": 3,
                    "valid": 0,
                    "rejected": 3,
                },
            ],
            "byOperation": [
                {"operation": "GET /charge-points", "requests": 5, "valid": 2, "rejected": 3},
                {"operation": "GET /invoices", "requests": 3, "valid": 3, "rejected": 0},
            ],
        }
    }


@pytest.mark.parametrize(
    ("start", "end", "granularity"),
    [
        ("9999-12-31T23:00:00Z", "9999-12-31T23:59:30Z", "MINUTE"),
        ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59Z", "DAY"),
    ],
)
async def test_dates_the_service_cannot_count_are_bad_user_input_never_internal(
    client: httpx.AsyncClient, tenant: Tenant, start: str, end: str, granularity: str
) -> None:
    result = await gql(
        client,
        USAGE,
        {"from": start, "to": end, "granularity": granularity},
        key=tenant.admin_key,
    )

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert result.errors[0]["extensions"]["argument"] == "to"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+01:00", "0001-01-02T00:00:00Z"),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:00-05:00"),
    ],
)
async def test_a_moment_past_the_calendar_once_in_utc_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, start: str, end: str
) -> None:
    result = await gql(
        client, USAGE, {"from": start, "to": end, "granularity": "HOUR"}, key=tenant.admin_key
    )

    assert result.error_codes == ["BAD_USER_INPUT"]
