"""Every answer of ``/graphql`` is a GraphQL response, whatever was sent: bodies over the limit,
bodies that are not GraphQL requests, unknown operations, mutations sent with GET, text that
UTF-8 cannot carry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.graphql.schema import build_schema
from app.graphql.view import KeyhouseGraphQL
from app.main import create_app
from app.runtime import Runtime
from tests.support import Tenant, gql, snapshot

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
MiB = 1024 * 1024


def _only_error(response: httpx.Response) -> dict[str, Any]:
    """The single error of a request refused before any operation ran (no data entry)."""
    body = response.json()
    assert "data" not in body, body
    [error] = body["errors"]
    assert isinstance(error["message"], str)
    return dict(error)


class Chunks:
    """A request body sent chunk by chunk (no Content-Length), counting what was read of it."""

    def __init__(self, size: int, chunk: int = MiB) -> None:
        self.sent = 0
        self.size = size
        self.chunk = b"{" + b" " * (chunk - 1)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.size:
            self.sent += len(self.chunk)
            yield self.chunk


# --- the body limit -------------------------------------------------------------------------


async def test_a_body_announced_over_the_limit_is_413_before_a_byte_is_read(
    client: httpx.AsyncClient,
) -> None:
    body = Chunks(100 * MiB)

    response = await client.post(
        "/graphql",
        content=body,
        headers={"Content-Type": "application/json", "Content-Length": str(100 * MiB)},
    )

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    assert _only_error(response)["extensions"] == {"code": "PAYLOAD_TOO_LARGE"}
    assert body.sent == 0


async def test_a_streamed_body_is_refused_once_it_passes_the_limit_and_not_read_further(
    client: httpx.AsyncClient,
) -> None:
    body = Chunks(100 * MiB)

    response = await client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert _only_error(response)["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body.sent <= 2 * MiB, "reading stops at the first chunk past the limit"


async def test_the_body_limit_comes_before_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/graphql",
        content=b'{"query": "{ organization { id } }", "x": "' + b"a" * MiB + b'"}',
        headers={"Content-Type": "application/json", "Accept": GRAPHQL_RESPONSE_JSON},
    )

    assert response.status_code == 413  # not 401: no key was sent, and none was looked at
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert "1,048,576 bytes" in _only_error(response)["message"]


async def test_a_body_at_the_limit_is_answered(client: httpx.AsyncClient, tenant: Tenant) -> None:
    payload = b'{"query": "{ organization { id } }"}'
    padded = payload[:-1] + b" " * (MiB - len(payload)) + b"}"

    response = await client.post(
        "/graphql",
        content=padded,
        headers={"Content-Type": "application/json", "X-API-Key": tenant.admin_key},
    )

    assert len(padded) == MiB
    assert response.status_code == 200
    assert response.json()["data"] == {"organization": {"id": tenant.organization_id}}


async def test_the_body_limit_is_a_setting(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}", graphql_max_body_bytes=64
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    query = {"query": "{ organization { id name createdAt keyCounts { active } } }"}

    async with httpx.AsyncClient(transport=transport, base_url="http://keyhouse.test") as client:
        response = await client.post("/graphql", json=query)

    assert len(json.dumps(query)) > 64
    assert response.status_code == 413


# --- requests that are not GraphQL requests -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        pytest.param(b'{"query": "{ organization { id } }"', "JSON", id="truncated JSON"),
        pytest.param(b"\xff\xfe", "JSON", id="not UTF-8"),
        pytest.param(b'"{ organization { id } }"', "JSON object", id="a JSON string"),
        pytest.param(b"42", "JSON object", id="a JSON number"),
        pytest.param(b"{}", "query", id="no query"),
        pytest.param(b'{"query": 42}', "query", id="query not a string"),
        pytest.param(b'{"query": "{ a }", "variables": [1]}', "variables", id="variables a list"),
        pytest.param(
            b'{"query": "{ a }", "operationName": {"a": 1}}',
            "operationName",
            id="operationName an object",
        ),
        pytest.param(b'[{"query": "{ a }"}]', "atch", id="a batch"),
    ],
)
@pytest.mark.parametrize("accept", ["application/json", GRAPHQL_RESPONSE_JSON])
async def test_a_body_that_is_no_graphql_request_is_a_400_graphql_error(
    client: httpx.AsyncClient, tenant: Tenant, body: bytes, message_part: str, accept: str
) -> None:
    response = await client.post(
        "/graphql",
        content=body,
        headers={
            "Content-Type": "application/json",
            "Accept": accept,
            "X-API-Key": tenant.admin_key,
        },
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith(accept)
    error = _only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert message_part in error["message"]


async def test_an_unsupported_content_type_is_a_graphql_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/graphql",
        content=b"{ organization { id } }",
        headers={"Content-Type": "text/plain", "X-API-Key": tenant.admin_key},
    )

    assert response.status_code == 400
    assert "content type" in _only_error(response)["message"]


async def test_an_unknown_operation_name_is_a_400_graphql_error_quoting_an_excerpt(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    name = "Nope" * 1000

    response = await client.post(
        "/graphql",
        json={"query": "query Known { organization { id } }", "operationName": name},
        headers={"X-API-Key": tenant.admin_key},
    )

    assert response.status_code == 400
    error = _only_error(response)
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert "NopeNope" in error["message"]
    assert len(error["message"]) < 200


async def test_a_document_without_an_operation_is_a_graphql_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "fragment Names on Query { scopes { name } }"},
        headers={"X-API-Key": tenant.admin_key},
    )

    assert response.status_code == 400
    assert "operationName" in _only_error(response)["message"]


async def test_a_mutation_sent_with_get_is_a_405_graphql_error_and_changes_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    before = await snapshot(runtime)
    mutation = 'mutation { createApiKey(input: {name: "x", scopes: ["read:sessions"]}) { secret } }'

    response = await client.get(
        "/graphql",
        params={"query": mutation},
        headers={"X-API-Key": tenant.admin_key, "Accept": "application/json"},
    )

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    error = _only_error(response)
    assert "GET" in error["message"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert await snapshot(runtime) == before


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_a_method_graphql_does_not_take_is_a_405_graphql_error(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, "/graphql", json={"query": "{ __typename }"})

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert _only_error(response)["extensions"] == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{ organization { " + "x" * 100_000 + " } }", id="an unknown field"),
        pytest.param("{ organization { id } } " + "y" * 100_000, id="a syntax error"),
    ],
)
async def test_an_error_quotes_at_most_an_excerpt_of_the_document(
    client: httpx.AsyncClient, tenant: Tenant, query: str
) -> None:
    result = await gql(client, query, key=tenant.admin_key)

    [error] = result.errors
    assert len(error["message"]) <= 400
    assert len(result.response.content) < 1000


async def test_an_error_quotes_at_most_an_excerpt_of_a_variable(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = "query ($first: Int!) { apiKeys(first: $first) { totalCount } }"

    result = await gql(client, query, {"first": "9" * 100_000}, key=tenant.admin_key)

    assert result.error_codes == ["BAD_USER_INPUT"]
    assert len(result.errors[0]["message"]) <= 400


# --- text UTF-8 cannot carry ----------------------------------------------------------------


async def test_a_lone_surrogate_in_an_unknown_operation_name_is_answered_as_json(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/graphql",
        content=b'{"query": "query Q { organization { id } }", "operationName": "Q\\udc00"}',
        headers={"Content-Type": "application/json", "X-API-Key": tenant.admin_key},
    )

    assert response.status_code == 400
    assert "Q\ufffd" in _only_error(response)["message"]


async def test_a_lone_surrogate_in_a_variable_is_answered_as_json(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    query = "query ($first: Int!) { apiKeys(first: $first) { totalCount } }"
    response = await client.post(
        "/graphql",
        content=b'{"query": "%s", "variables": {"first": "1\\udc00"}}' % query.encode(),
        headers={"Content-Type": "application/json", "X-API-Key": tenant.admin_key},
    )

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "\udc00" not in response.text


def test_encoding_an_answer_never_fails(runtime: Runtime) -> None:
    view = KeyhouseGraphQL(build_schema(runtime.settings), runtime)

    encoded = view.encode_json({"errors": [{"message": "Q\udc00", "path": ["a\ud800b"]}]})

    assert json.loads(encoded) == {"errors": [{"message": "Q\ufffd", "path": ["a\ufffdb"]}]}


# --- application/graphql-response+json: no data for what never executed ---------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param("{ organization { id ", None, id="syntax error"),
        pytest.param("{ organization { nope } }", None, id="validation error"),
        pytest.param(
            "query ($first: Int!) { apiKeys(first: $first) { totalCount } }",
            {"first": "many"},
            id="variable coercion error",
        ),
    ],
)
async def test_a_request_that_never_executed_has_no_data_entry_with_graphql_response_json(
    client: httpx.AsyncClient, tenant: Tenant, query: str, variables: dict[str, Any] | None
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"X-API-Key": tenant.admin_key, "Accept": GRAPHQL_RESPONSE_JSON},
    )

    assert response.status_code == 400
    body = response.json()
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_a_request_that_never_executed_keeps_data_null_with_application_json(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ organization { nope } }"},
        headers={"X-API-Key": tenant.admin_key, "Accept": "application/json"},
    )

    assert response.status_code == 200
    assert response.json()["data"] is None
