"""GraphQL over HTTP at ``/graphql``: how a key is presented and refused, media types, GraphiQL,
abuse limits, error masking and what gets logged."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
import strawberry.schema.schema
from graphql.validation import validate
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.secret import generate_secret
from app.graphql.schema import build_schema
from app.graphql.view import KeyhouseGraphQL
from app.runtime import Runtime
from tests.support import GraphQLResult, Tenant, gql, make_key, snapshot

ORGANIZATION = "{ organization { id } }"

CREATE = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id } secret userErrors { code field message } }
}
"""
CREATE_VARIABLES = {"input": {"name": "should not exist", "scopes": ["read:charge_points"]}}

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


# A list of pairs for a header sent more than once.
Headers = dict[str, str] | list[tuple[str, str]]


async def _post(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    headers: Headers | None = None,
    params: dict[str, str] | None = None,
) -> GraphQLResult:
    """A GraphQL POST with the key (or whatever stands for it) wherever the test put it."""
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    response = await client.post("/graphql", json=payload, headers=headers, params=params)
    return GraphQLResult(response, response.json())


def _assert_unauthorized(result: GraphQLResult, reason: str) -> dict[str, Any]:
    assert result.response.status_code == 401, result.body
    assert result.response.headers["WWW-Authenticate"].startswith("Bearer")
    assert result.data is None
    [error] = result.errors
    extensions: dict[str, Any] = error["extensions"]
    assert extensions["code"] == "UNAUTHORIZED"
    assert extensions["reason"] == reason
    assert error["message"]
    assert extensions["hint"]
    return extensions


# --- presenting a key -----------------------------------------------------------------------------

Where = Callable[[str], tuple[Headers, dict[str, str]]]


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(lambda key: ({"X-API-Key": key}, {}), id="X-API-Key"),
        pytest.param(lambda key: ({"Authorization": f"Bearer {key}"}, {}), id="Bearer"),
        pytest.param(lambda key: ({"authorization": f"bearer {key}"}, {}), id="lowercase bearer"),
        pytest.param(lambda key: ({}, {"key": key}), id="key query parameter"),
        pytest.param(
            lambda key: (
                {"X-API-Key": key, "Authorization": f"Bearer {key}"},
                {"key": key},
            ),
            id="the same key in three places",
        ),
        pytest.param(
            lambda key: ([("X-API-Key", key), ("X-API-Key", key)], {}),
            id="the same key in two X-API-Key headers",
        ),
    ],
)
async def test_a_key_is_accepted_in_each_documented_place(
    client: httpx.AsyncClient, tenant: Tenant, where: Where
) -> None:
    headers, params = where(tenant.admin_key)

    result = await _post(client, ORGANIZATION, headers=headers, params=params)

    assert result.response.status_code == 200
    assert result.data == {"organization": {"id": tenant.organization_id}}


Presented = Callable[[Tenant, Tenant], tuple[Headers, dict[str, str]]]


def _typo(key: str) -> str:
    return key[:-1] + ("a" if key[-1] != "a" else "b")


@pytest.mark.parametrize(
    ("reason", "presented"),
    [
        pytest.param("MISSING", lambda a, b: ({}, {}), id="MISSING: nothing"),
        pytest.param(
            "MISSING", lambda a, b: ({"Authorization": "Bearer "}, {}), id="MISSING: empty Bearer"
        ),
        pytest.param("MISSING", lambda a, b: ({"X-API-Key": ""}, {}), id="MISSING: empty header"),
        pytest.param(
            "MISSING",
            lambda a, b: ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
            id="MISSING: Basic credentials",
        ),
        pytest.param(
            "MALFORMED", lambda a, b: ({"X-API-Key": _typo(a.admin_key)}, {}), id="MALFORMED: typo"
        ),
        pytest.param(
            "MALFORMED",
            lambda a, b: ({"X-API-Key": a.admin_key[:-3]}, {}),
            id="MALFORMED: truncated",
        ),
        pytest.param(
            "MALFORMED",
            lambda a, b: ({"X-API-Key": "sk" + a.admin_key[2:]}, {}),
            id="MALFORMED: wrong prefix",
        ),
        pytest.param(
            "LOOKS_LIKE_JWT",
            lambda a, b: (
                {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"},
                {},
            ),
            id="LOOKS_LIKE_JWT",
        ),
        pytest.param(
            "PLACEHOLDER",
            lambda a, b: ({}, {"key": "$openchargemapkey"}),
            id="PLACEHOLDER: $variable",
        ),
        pytest.param(
            "PLACEHOLDER", lambda a, b: ({"X-API-Key": "{key}"}, {}), id="PLACEHOLDER: {key}"
        ),
        pytest.param(
            "PLACEHOLDER",
            lambda a, b: ({"Authorization": "Bearer <API Key>"}, {}),
            id="PLACEHOLDER: <API Key>",
        ),
        pytest.param(
            "PLACEHOLDER",
            lambda a, b: ({"X-API-Key": "YOUR_API_KEY"}, {}),
            id="PLACEHOLDER: YOUR_API_KEY",
        ),
        pytest.param(
            "QUOTED", lambda a, b: ({"X-API-Key": f'"{a.admin_key}"'}, {}), id="QUOTED: double"
        ),
        pytest.param("QUOTED", lambda a, b: ({}, {"key": f"'{a.admin_key}'"}), id="QUOTED: single"),
        pytest.param(
            "CONFLICTING",
            lambda a, b: ({"X-API-Key": a.admin_key, "Authorization": f"Bearer {b.admin_key}"}, {}),
            id="CONFLICTING: two organizations' keys",
        ),
        pytest.param(
            "CONFLICTING",
            lambda a, b: ({"X-API-Key": a.admin_key}, {"key": _typo(a.admin_key)}),
            id="CONFLICTING: key and typo",
        ),
        pytest.param(
            "CONFLICTING",
            lambda a, b: ([("X-API-Key", a.admin_key), ("X-API-Key", b.admin_key)], {}),
            id="CONFLICTING: two X-API-Key headers",
        ),
        pytest.param(
            "CONFLICTING",
            lambda a, b: (
                [
                    ("Authorization", f"Bearer {a.admin_key}"),
                    ("Authorization", f"Bearer {b.admin_key}"),
                ],
                {},
            ),
            id="CONFLICTING: two Authorization headers",
        ),
        pytest.param(
            "UNKNOWN",
            lambda a, b: ({"X-API-Key": generate_secret("kh")}, {}),
            id="UNKNOWN",
        ),
    ],
)
async def test_a_key_presented_wrongly_is_401_with_its_reason_and_changes_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    other_tenant: Tenant,
    reason: str,
    presented: Presented,
) -> None:
    headers, params = presented(tenant, other_tenant)
    before = await snapshot(runtime)

    result = await _post(client, CREATE, CREATE_VARIABLES, headers=headers, params=params)

    _assert_unauthorized(result, reason)
    assert await snapshot(runtime) == before


async def test_a_revoked_key_is_refused_on_the_very_next_request(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    key = await make_key(runtime, tenant, "soon revoked", ["write:api_keys", "read:charge_points"])
    assert (await gql(client, ORGANIZATION, key=key.secret)).errors == []  # now cached
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }"
    revoked = await gql(client, revoke, {"id": key.id}, key=tenant.admin_key)
    assert revoked.data == {"revokeApiKey": {"userErrors": []}}
    before = await snapshot(runtime)

    result = await gql(client, CREATE, CREATE_VARIABLES, key=key.secret)

    _assert_unauthorized(result, "REVOKED")
    assert "revoked at" in result.errors[0]["message"]
    assert await snapshot(runtime) == before


async def test_an_expired_key_is_refused_on_the_very_next_request(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await make_key(runtime, tenant, "short-lived", ["write:api_keys"], expires_in_days=1)
    assert (await gql(client, ORGANIZATION, key=key.secret)).errors == []  # now cached
    a_day_later = time.time() + 86400 + 1
    monkeypatch.setattr("app.keys.verification.time.time", lambda: a_day_later)
    before = await snapshot(runtime)

    result = await gql(client, CREATE, CREATE_VARIABLES, key=key.secret)

    _assert_unauthorized(result, "EXPIRED")
    assert "expired at" in result.errors[0]["message"]
    assert await snapshot(runtime) == before


# --- HTTP: GET, media types, GraphiQL -------------------------------------------------------------


async def test_the_graphiql_page_loads_in_a_browser_without_a_key(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_a_query_can_be_sent_with_get(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get(
        "/graphql",
        params={"query": ORGANIZATION},
        headers={"X-API-Key": tenant.admin_key, "Accept": "application/json"},
    )

    assert response.status_code == 200
    assert response.json()["data"] == {"organization": {"id": tenant.organization_id}}


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (GRAPHQL_RESPONSE_JSON, GRAPHQL_RESPONSE_JSON),
        (f"{GRAPHQL_RESPONSE_JSON}, application/json;q=0.9", GRAPHQL_RESPONSE_JSON),
        ("application/json", "application/json"),
        ("*/*", "application/json"),
    ],
)
async def test_the_answer_has_the_media_type_the_client_asks_for(
    client: httpx.AsyncClient, tenant: Tenant, accept: str, media_type: str
) -> None:
    result = await gql(client, ORGANIZATION, key=tenant.admin_key, headers={"Accept": accept})

    assert result.response.status_code == 200
    assert result.response.headers["content-type"].split(";")[0] == media_type
    assert result.data == {"organization": {"id": tenant.organization_id}}


async def test_a_request_that_never_executes_is_400_with_graphql_response_json(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    result = await gql(
        client,
        "{ organization { id ",
        key=tenant.admin_key,
        headers={"Accept": GRAPHQL_RESPONSE_JSON},
    )

    assert result.response.status_code == 400
    assert result.response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert result.error_codes == ["BAD_USER_INPUT"]


# --- abuse limits ---------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    """A query whose deepest field is ``depth`` levels below ``apiKeys``."""
    opening = "{ apiKeys { nodes { " + "supersededBy { " * (depth - 2)
    return opening + "id" + " }" * (depth - 2) + " } } }"


def _aliases(count: int) -> str:
    return "{ " + " ".join(f"a{n}: organization {{ id }}" for n in range(count)) + " }"


def _tokens(count: int) -> str:
    """A query of ``count`` tokens, the end of the document included."""
    return "{ organization { " + "id " * (count - 5) + "} }"


@pytest.mark.parametrize(
    ("query", "message_part"),
    [
        pytest.param(_nested(11), "exceeds maximum operation depth", id="depth 11"),
        pytest.param(_aliases(16), "aliases", id="16 aliases"),
        pytest.param(_tokens(2001), "token", id="2001 tokens"),
    ],
)
async def test_a_query_past_an_abuse_limit_is_bad_user_input(
    client: httpx.AsyncClient, tenant: Tenant, query: str, message_part: str
) -> None:
    result = await gql(client, query, key=tenant.admin_key)

    assert result.data is None
    assert result.error_codes == ["BAD_USER_INPUT"]
    assert message_part in result.errors[0]["message"].lower()


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(_nested(10), id="depth 10"),
        pytest.param(_aliases(15), id="15 aliases"),
    ],
)
async def test_a_query_at_an_abuse_limit_is_answered(
    client: httpx.AsyncClient, tenant: Tenant, query: str
) -> None:
    result = await gql(client, query, key=tenant.admin_key)

    assert result.errors == []


async def test_a_document_is_validated_once_and_its_limits_hold_on_every_request(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    validations: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        validations.append(args[1])
        return validate(*args, **kwargs)

    monkeypatch.setattr(strawberry.schema.schema, "validate", counted)
    # Texts no other test sends, so that the first request of each misses the cache.
    fine = "query ValidatedOnce { organization { id name } }"
    too_deep = _nested(11).replace("{", "{ __typename ", 1)

    answers = [await gql(client, fine, key=tenant.admin_key) for _ in range(3)]
    refusals = [await gql(client, too_deep, key=tenant.admin_key) for _ in range(3)]

    assert [a.errors for a in answers] == [[], [], []]
    assert [r.error_codes for r in refusals] == [["BAD_USER_INPUT"]] * 3
    assert len(validations) == 2, "each document is validated on its first request only"


# --- unexpected errors ----------------------------------------------------------------------------


def _database_failure(*_args: Any, **_kwargs: Any) -> Any:
    raise ProgrammingError(
        "SELECT key_hash FROM api_keys WHERE organization_id = 'org_x'",
        {},
        RuntimeError("column 'key_hash' does not exist (server 10.0.0.7)"),
    )


def _lost_connection(*_args: Any, **_kwargs: Any) -> Any:
    raise OperationalError(
        "SELECT key_hash FROM api_keys WHERE organization_id = 'org_x'",
        {},
        RuntimeError("connection to server at 10.0.0.7 lost"),
        connection_invalidated=True,
    )


async def test_an_unexpected_error_is_masked_as_internal_without_details(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.keys.repository.list_keys", _database_failure)

    result = await gql(client, "{ apiKeys { totalCount } }", key=tenant.admin_key)

    assert result.data is None
    assert result.errors == [
        {
            "message": "Internal server error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["apiKeys"],
            "extensions": {"code": "INTERNAL"},
        }
    ]
    for detail in ("SELECT", "key_hash", "10.0.0.7", "Traceback", "OperationalError", ".py"):
        assert detail not in result.response.text


async def test_a_lost_database_connection_is_unavailable_without_details(
    client: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.keys.repository.list_keys", _lost_connection)

    result = await gql(client, "{ apiKeys { totalCount } }", key=tenant.admin_key)

    assert result.response.status_code == 503
    assert result.response.headers["Retry-After"] == "5"
    assert result.errors == [
        {
            "message": "The database is unavailable; retry in a few seconds.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["apiKeys"],
            "extensions": {"code": "UNAVAILABLE"},
        }
    ]
    for detail in ("SELECT", "key_hash", "10.0.0.7", "Traceback", "OperationalError", ".py"):
        assert detail not in result.response.text


async def test_an_unexpected_error_inside_a_mutation_undoes_all_of_it(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The audit event is written after the key was inserted and flushed.
    monkeypatch.setattr("app.keys.service.record_event", _database_failure)
    before = await snapshot(runtime)

    result = await gql(client, CREATE, CREATE_VARIABLES, key=tenant.admin_key)

    assert result.error_codes == ["INTERNAL"]
    assert await snapshot(runtime) == before


async def test_an_unexpected_database_error_is_logged_without_the_statements_parameters(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "canary-3b9e1d"

    async def failing_lookup(session: AsyncSession, organization_id: str, name: str) -> bool:
        connection = await session.connection()
        broken = text("SELECT id FROM api_keys WHERE name = :name AND no_such_column = 1")
        await connection.execute(broken, {"name": name})
        return False

    monkeypatch.setattr("app.keys.service.live_name_exists", failing_lookup)
    caplog.set_level(logging.DEBUG)

    result = await gql(
        client,
        CREATE,
        {"input": {"name": canary, "scopes": ["read:sessions"]}},
        key=tenant.admin_key,
    )

    assert result.error_codes == ["INTERNAL"]
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged.exc_info is not None  # unexpected: logged with its traceback, for operators
    assert canary not in caplog.text
    assert canary not in result.response.text


# --- logs -----------------------------------------------------------------------------------------


Send = Callable[[httpx.AsyncClient, Tenant, str], Awaitable[GraphQLResult]]


@pytest.mark.parametrize(
    ("code", "send"),
    [
        pytest.param(
            "UNAUTHORIZED",
            lambda client, tenant, limited: gql(client, ORGANIZATION, key=generate_secret("kh")),
            id="UNAUTHORIZED",
        ),
        pytest.param(
            "FORBIDDEN",
            lambda client, tenant, limited: gql(client, "{ apiKeys { totalCount } }", key=limited),
            id="FORBIDDEN",
        ),
        pytest.param(
            "BAD_USER_INPUT",
            lambda client, tenant, limited: gql(
                client, "{ organization { nope } }", key=tenant.admin_key
            ),
            id="BAD_USER_INPUT from validation",
        ),
        pytest.param(
            "BAD_USER_INPUT",
            lambda client, tenant, limited: gql(
                client, "{ apiKeys(first: 0) { totalCount } }", key=tenant.admin_key
            ),
            id="BAD_USER_INPUT from a resolver",
        ),
        pytest.param(
            "INVALID_SCOPE",
            lambda client, tenant, limited: gql(
                client, CREATE, {"input": {"name": "x", "scopes": ["read:nothing"]}}, key=limited
            ),
            id="userError",
        ),
    ],
)
async def test_an_expected_error_is_logged_as_one_line_without_a_traceback(
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
    code: str,
    send: Send,
) -> None:
    limited = await make_key(runtime, tenant, "limited", ["write:api_keys", "read:charge_points"])
    caplog.set_level(logging.DEBUG)

    result = await send(client, tenant, limited.secret)

    assert code in result.response.text
    records = [r for r in caplog.records if r.name.startswith("app")]
    assert [r for r in records if code in r.getMessage()], records
    for record in records:
        assert record.levelno < logging.ERROR
        assert record.exc_info is None
        assert "\n" not in record.getMessage()


async def test_request_variables_are_never_logged(
    client: httpx.AsyncClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = "canary-7f3a9c"
    requests: list[tuple[str, dict[str, Any]]] = [
        (CREATE, {"input": {"name": canary, "scopes": [f"read:{canary}"]}}),
        (CREATE, {"input": {"name": canary, "scopes": ["read:sessions"], "expiresInDays": 0}}),
        ("mutation($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }", {"id": canary}),
        ("query($s: String) { apiKeys(filter: {scope: $s}) { totalCount } }", {"s": canary}),
        ("query($a: String) { apiKeys(after: $a) { totalCount } }", {"a": canary}),
        ("query($f: Int!) { apiKeys(first: $f) { totalCount } }", {"f": canary}),
        ("query($id: ID!) { apiKey(id: $id) { id } }", {"id": canary}),
    ]

    for query, variables in requests:
        result = await gql(client, query, variables, key=tenant.admin_key)
        assert result.response.status_code == 200, result.body

    assert caplog.records  # the errors were logged at all
    assert canary not in caplog.text


# --- rate limit ---------------------------------------------------------------------------

CREATE_LIMITED_KEY = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { secret userErrors { code } }
}
"""


async def limited_key(client: httpx.AsyncClient, tenant: Tenant, requests: int) -> str:
    created = await gql(
        client,
        CREATE_LIMITED_KEY,
        {
            "input": {
                "name": "limited",
                "scopes": ["read:api_keys"],
                "rateLimit": {"requests": requests, "perSeconds": 60},
            }
        },
        key=tenant.admin_key,
    )
    assert created.data["createApiKey"]["userErrors"] == [], created.body
    secret: str = created.data["createApiKey"]["secret"]
    return secret


async def test_a_key_over_its_budget_gets_429_rate_limited_with_retry_after(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    secret = await limited_key(client, tenant, 2)
    answers = [await gql(client, "{ organization { name } }", key=secret) for _ in range(3)]

    assert [answer.response.status_code for answer in answers] == [200, 200, 429]
    refused = answers[2]
    assert "data" not in refused.body  # never executed: no data entry at all
    assert refused.errors[0]["extensions"]["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.response.headers["Retry-After"]) <= 60
    assert refused.response.headers["X-RateLimit-Remaining"] == "0"


async def test_graphql_and_verification_spend_one_budget(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    secret = await limited_key(client, tenant, 2)

    verified = await client.post("/v1/keys/verify", json={"key": secret})
    first = await gql(client, "{ organization { name } }", key=secret)
    second = await gql(client, "{ organization { name } }", key=secret)

    assert verified.json()["valid"] is True
    assert first.response.status_code == 200
    assert second.response.status_code == 429


async def test_answers_encode_values_orjson_alone_refuses(runtime: Runtime) -> None:
    # A JSON scalar passes its value through as it is: a set or a Decimal must not become a 500.
    view = KeyhouseGraphQL(build_schema(runtime.settings), runtime)

    encoded = view.encode_json({"data": {"details": {"tags": {"b"}, "amount": Decimal("1.5")}}})

    assert json.loads(encoded) == {"data": {"details": {"tags": ["b"], "amount": "1.5"}}}


async def test_a_query_ends_its_unit_of_work_without_a_commit_and_a_mutation_with_one(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    commits: list[str] = []

    def committed(_connection: object) -> None:
        commits.append("commit")

    event.listen(runtime.engine.sync_engine, "commit", committed)
    try:
        query = await gql(client, "{ apiKeys(first: 5) { totalCount } }", key=tenant.admin_key)
        after_query = len(commits)
        mutation = await gql(
            client,
            'mutation { createApiKey(input: {name: "n", scopes: ["read:billing"]}) { secret } }',
            key=tenant.admin_key,
        )
    finally:
        event.remove(runtime.engine.sync_engine, "commit", committed)

    assert query.errors == mutation.errors == []
    assert after_query == 0
    assert len(commits) == 1
