"""The static cost of an operation (app/graphql/cost.py): what it counts, that the dashboard's
operations fit well under the default maximum, and that what costs more is refused before it
runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import GraphQLSchema, parse

from app.config import Settings
from app.graphql.cost import CostCache, CostModel, operation_cost
from app.graphql.schema import build_schema
from app.main import create_app
from app.runtime import Runtime
from app.usage.graphql import LIST_SIZES
from tests.support import Tenant, gql

FRONTEND_QUERIES = Path(__file__).resolve().parents[2] / "frontend-queries"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
MAXIMUM = Settings().graphql_max_cost
TEN_YEARS = ("2016-12-03T00:00:00Z", "2026-12-01T00:00:00Z")  # 3,650 days


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema(Settings())._schema


def cost(
    schema: GraphQLSchema,
    query: str,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> int | None:
    model = CostModel(maximum=MAXIMUM, list_sizes=LIST_SIZES)
    return operation_cost(model, schema, parse(query), operation_name, variables)


def series(alias: str, start: str, end: str, granularity: str) -> str:
    return (
        f'{alias}: usage(from: "{start}", to: "{end}", granularity: {granularity}) '
        "{ series { start requests valid rejected } }"
    )


# --- what counts ----------------------------------------------------------------------------


def test_every_field_costs_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ organization { id name keyCounts { active } } }") == 5


def test_a_page_size_multiplies_the_fields_of_each_item(schema: GraphQLSchema) -> None:
    # apiKeys, nodes, then two fields for each of 10 keys.
    assert cost(schema, "{ apiKeys(first: 10) { nodes { id name } } }") == 2 + 10 * 2


def test_a_page_size_in_a_variable_counts_like_a_literal_one(schema: GraphQLSchema) -> None:
    query = "query ($n: Int!) { apiKeys(first: $n) { edges { cursor node { id } } } }"

    assert cost(schema, query, {"n": 7}) == 2 + 7 * 3


def test_a_page_without_a_size_counts_the_default_page(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ apiKeys { nodes { id } } }") == 2 + 20


def test_a_page_size_past_what_a_page_allows_counts_as_the_largest_page(
    schema: GraphQLSchema,
) -> None:
    # The resolver refuses it with its own, clearer, message.
    assert cost(schema, "{ apiKeys(first: 100000) { nodes { id } } }") == 2 + 100


def test_nested_lists_multiply(schema: GraphQLSchema) -> None:
    query = "{ usage(from: $f, to: $t, granularity: DAY) { byKey(first: 5) { apiKey { id } } } }"
    query = query.replace("$f", '"2026-11-01T00:00:00Z"').replace("$t", '"2026-11-02T00:00:00Z"')

    assert cost(schema, query) == 2 + 5 * 2


@pytest.mark.parametrize(
    ("start", "end", "granularity", "points"),
    [
        ("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z", "HOUR", 24),
        ("2026-11-30T00:00:00Z", "2026-11-30T01:00:00Z", "MINUTE", 60),
        ("2026-11-30T00:30:00Z", "2026-11-30T02:00:00Z", "HOUR", 2),  # from floors to 00:00
        (*TEN_YEARS, "DAY", 3650),
        ("2000-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "DAY", 3650),  # refused for its span
        ("2026-12-01T00:00:00Z", "2026-11-30T00:00:00Z", "DAY", 0),  # refused: to before from
        ("9999-12-31T23:00:00Z", "9999-12-31T23:59:30Z", "MINUTE", 60),
    ],
)
def test_a_series_counts_one_point_per_step_of_its_range(
    schema: GraphQLSchema, start: str, end: str, granularity: str, points: int
) -> None:
    query = "{ " + series("s", start, end, granularity) + " }"

    assert cost(schema, query) == 2 + points * 4


def test_each_alias_counts(schema: GraphQLSchema) -> None:
    one = "{ " + series("a", *TEN_YEARS, "DAY") + " }"
    three = "{ " + " ".join(series(alias, *TEN_YEARS, "DAY") for alias in "abc") + " }"

    assert cost(schema, three) == 3 * cost(schema, one)  # type: ignore[operator]


def test_fragments_count_like_the_fields_they_stand_for(schema: GraphQLSchema) -> None:
    plain = "{ apiKeys(first: 10) { nodes { id name } } }"
    spread = """
        { apiKeys(first: 10) { nodes { ...Key } } }
        fragment Key on ApiKey { id name }
    """
    inline = "{ apiKeys(first: 10) { nodes { ... on ApiKey { id name } } } }"

    assert cost(schema, spread) == cost(schema, inline) == cost(schema, plain)


def test_a_field_selected_twice_under_one_name_runs_and_counts_once(
    schema: GraphQLSchema,
) -> None:
    twice = "{ apiKeys(first: 10) { nodes { id name } nodes { id } } }"

    assert cost(schema, twice) == cost(schema, "{ apiKeys(first: 10) { nodes { id name } } }")


def test_skipped_fields_do_not_count(schema: GraphQLSchema) -> None:
    query = "query ($skip: Boolean!) { apiKeys(first: 10) @skip(if: $skip) { nodes { id } } }"

    assert cost(schema, query, {"skip": True}) == 0
    assert cost(schema, query, {"skip": False}) == 2 + 10


def test_only_the_operation_that_runs_counts(schema: GraphQLSchema) -> None:
    document = (
        "query Small { organization { id } } query Large { apiKeys(first: 100) { nodes { id } } }"
    )

    assert cost(schema, document, operation_name="Small") == 2
    assert cost(schema, document, operation_name="Large") == 2 + 100


def test_introspection_counts_one(schema: GraphQLSchema) -> None:
    assert cost(schema, "{ __schema { types { name fields { name args { name } } } } }") == 1


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param("query ($n: Int!) { apiKeys(first: $n) { totalCount } }", {}, id="missing"),
        pytest.param(
            "query ($n: Int!) { apiKeys(first: $n) { totalCount } }", {"n": "x"}, id="not an Int"
        ),
    ],
)
def test_variables_that_do_not_coerce_have_no_cost(
    schema: GraphQLSchema, query: str, variables: dict[str, Any]
) -> None:
    assert cost(schema, query, variables) is None  # execution refuses them, at no cost


def test_costs_are_kept_by_text_and_variables() -> None:
    cache = CostCache(maxsize=2)
    estimates: list[str] = []

    def estimate(label: str) -> int:
        estimates.append(label)
        return len(estimates)

    assert cache.cost("{ a }", None, {"n": 1}, lambda: estimate("a1")) == 1
    assert cache.cost("{ a }", None, {"n": 1}, lambda: estimate("again")) == 1
    assert cache.cost("{ a }", None, {"n": 2}, lambda: estimate("a2")) == 2
    assert cache.cost("{ a }", "A", {"n": 1}, lambda: estimate("named")) == 3
    assert cache.cost("{ a }", None, {"n": 1}, lambda: estimate("evicted")) == 4
    assert cache.cost("{ a }", None, {"n": "\udc00"}, lambda: estimate("unencodable")) == 5
    assert estimates == ["a1", "a2", "named", "evicted", "unencodable"]


# --- the default maximum and the dashboard --------------------------------------------------

# The most each dashboard operation asks for: the largest page, the longest series a
# granularity allows.
DASHBOARD_VARIABLES: dict[str, list[dict[str, Any]]] = {
    "AuditLog": [{"first": 100}],
    "CreateApiKey": [{"input": {"name": "ci", "scopes": ["read:billing"]}}],
    "KeyPolicy": [{}],
    "KeysPage": [{"first": 100, "filter": {"status": "ALL"}}],
    "KeysUsedAfterRevocation": [{"from": TEN_YEARS[0], "to": TEN_YEARS[1]}],
    "OrganizationOverview": [{}],
    "RevokeApiKey": [{"id": "key_x"}],
    "RotateApiKey": [{"input": {"id": "key_x", "gracePeriodHours": 24}}],
    "Scopes": [{}],
    "UpdateKeyPolicy": [{"input": {"singleActiveKey": True}}],
    "UsageBreakdowns": [
        {"from": TEN_YEARS[0], "to": TEN_YEARS[1], "granularity": "DAY", "first": 100},
    ],
    "UsageChart": [
        {"from": "2026-11-30T00:00:00Z", "to": "2026-12-01T00:00:00Z", "granularity": "MINUTE"},
        {"from": "2026-09-02T00:00:00Z", "to": "2026-12-01T00:00:00Z", "granularity": "HOUR"},
        {"from": TEN_YEARS[0], "to": TEN_YEARS[1], "granularity": "DAY", "apiKeyId": "key_x"},
    ],
    "WebhookEndpoints": [{}],
    "CreateWebhookEndpoint": [{"input": {"url": "https://hooks.example", "events": []}}],
    "UpdateWebhookEndpoint": [{"input": {"id": "whe_x", "enabled": False}}],
    "DeleteWebhookEndpoint": [{"id": "whe_x"}],
    "RotateWebhookSigningSecret": [{"id": "whe_x"}],
    "WebhookDeliveries": [{"endpointId": "whe_x", "first": 100}],
}


def _dashboard_costs(schema: GraphQLSchema) -> dict[str, int | None]:
    costs: dict[str, int | None] = {}
    for path in sorted(FRONTEND_QUERIES.glob("*.graphql")):
        for number, variables in enumerate(DASHBOARD_VARIABLES.get(path.stem, [{}])):
            costs[f"{path.stem} #{number}"] = cost(schema, path.read_text(), variables)
    return costs


def test_every_dashboard_operation_costs_at_most_a_quarter_of_the_default_maximum(
    schema: GraphQLSchema,
) -> None:
    costs = _dashboard_costs(schema)

    assert set(DASHBOARD_VARIABLES) == {path.stem for path in FRONTEND_QUERIES.glob("*.graphql")}
    assert all(each is not None for each in costs.values()), costs
    assert {name: each for name, each in costs.items() if each and each > MAXIMUM / 4} == {}


def test_the_default_maximum_is_not_much_more_than_the_dashboard_needs(
    schema: GraphQLSchema,
) -> None:
    heaviest = max(each or 0 for each in _dashboard_costs(schema).values())

    assert 5 * heaviest >= MAXIMUM


def test_fifteen_ten_year_daily_series_cost_more_than_the_maximum(schema: GraphQLSchema) -> None:
    query = "{ " + " ".join(series(f"s{n}", *TEN_YEARS, "DAY") for n in range(15)) + " }"

    assert (cost(schema, query) or 0) > MAXIMUM


# --- over HTTP ------------------------------------------------------------------------------


def _fifteen_series() -> str:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (end - timedelta(days=3650)).isoformat()
    return "{ " + " ".join(series(f"s{n}", start, end.isoformat(), "DAY") for n in range(15)) + " }"


async def test_an_operation_over_the_maximum_is_refused_before_it_runs(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[object] = []
    monkeypatch.setattr("app.usage.service.series", lambda *args, **kwargs: ran.append(args))

    result = await gql(client, _fifteen_series(), key=tenant.admin_key)

    assert result.response.status_code == 200
    assert result.data is None
    [error] = result.errors
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["maximumCost"] == MAXIMUM
    assert error["extensions"]["cost"] > MAXIMUM
    assert f"{MAXIMUM:,}" in error["message"]
    assert result.body["extensions"]["cost"] == {
        "requestedQueryCost": error["extensions"]["cost"],
        "maximumCost": MAXIMUM,
    }
    assert ran == []


async def test_a_refusal_for_cost_is_400_without_data_with_graphql_response_json(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    result = await gql(
        client, _fifteen_series(), key=tenant.admin_key, headers={"Accept": GRAPHQL_RESPONSE_JSON}
    )

    assert result.response.status_code == 400
    assert "data" not in result.body
    assert result.error_codes == ["BAD_USER_INPUT"]


async def test_every_answer_reports_its_cost(client: httpx.AsyncClient, tenant: Tenant) -> None:
    answered = await gql(client, "{ apiKeys(first: 5) { nodes { id } } }", key=tenant.admin_key)
    invalid = await gql(client, "{ organization { nope } }", key=tenant.admin_key)

    assert answered.errors == []
    assert answered.body["extensions"] == {
        "cost": {"requestedQueryCost": 2 + 5, "maximumCost": MAXIMUM}
    }
    # Refused while validating: no cost was ever computed.
    assert invalid.body["extensions"] == {
        "cost": {"requestedQueryCost": None, "maximumCost": MAXIMUM}
    }


async def test_the_heaviest_dashboard_chart_is_answered(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    variables = {
        "from": (end - timedelta(days=3650)).isoformat(),
        "to": end.isoformat(),
        "granularity": "DAY",
    }
    query = (FRONTEND_QUERIES / "UsageChart.graphql").read_text()

    result = await gql(client, query, variables, key=tenant.admin_key)

    assert result.errors == []
    assert len(result.data["usage"]["series"]) == 3650
    assert result.body["extensions"]["cost"]["requestedQueryCost"] <= MAXIMUM / 4


async def test_the_maximum_is_a_setting(runtime: Runtime, tenant: Tenant) -> None:
    settings = runtime.settings.model_copy(update={"graphql_max_cost": 10})
    strict = Runtime.create(settings)
    app = create_app(runtime=strict)
    transport = httpx.ASGITransport(app=app)

    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://keyhouse.test") as client,
        ):
            small = await gql(
                client, "{ apiKeys(first: 8) { nodes { id } } }", key=tenant.admin_key
            )
            large = await gql(
                client, "{ apiKeys(first: 9) { nodes { id } } }", key=tenant.admin_key
            )
    finally:
        await strict.engine.dispose()

    assert small.errors == []
    assert large.error_codes == ["BAD_USER_INPUT"]
    assert large.errors[0]["extensions"]["maximumCost"] == 10
