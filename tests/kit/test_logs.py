"""Log lines name their request and organization, as JSON when asked, and never a secret or a
GraphQL request's variables."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.config import LogFormat
from app.kit.logs import JsonFormatter, TextFormatter, logging_config
from tests.support import Tenant, gql

CREATE_KEY = """
mutation Create($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { secret userErrors { code field } }
}
"""


@pytest.fixture
def json_lines(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """What keyhouse logs at INFO and above, formatted as it happens (in the request's context)."""
    caplog.set_level(logging.INFO)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        yield written
    finally:
        logging.getLogger().removeHandler(handler)


def entries(written: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


async def test_a_json_line_names_the_request_and_the_organization_and_no_secret(
    client: httpx.AsyncClient, tenant: Tenant, json_lines: io.StringIO
) -> None:
    private = "a variable value that must never be logged"
    result = await gql(
        client,
        CREATE_KEY,
        {"input": {"name": private, "scopes": ["no:such:scope"]}},
        key=tenant.admin_key,
    )

    assert result.data["createApiKey"]["userErrors"][0]["code"] == "INVALID_SCOPE"
    request_id = result.response.headers["X-Request-Id"]
    [line] = [e for e in entries(json_lines) if "userError" in e["message"]]
    assert set(line) == {"time", "level", "logger", "message", "requestId", "organizationId"}
    assert (line["level"], line["logger"]) == ("INFO", "app.graphql.types")
    assert line["requestId"] == request_id
    assert line["organizationId"] == tenant.organization_id
    assert line["time"].endswith("+00:00")
    everything = json_lines.getvalue()
    assert tenant.admin_key not in everything
    assert private not in everything


async def test_the_gateways_request_id_is_taken_and_answered_back(
    client: httpx.AsyncClient, tenant: Tenant, json_lines: io.StringIO
) -> None:
    response = await client.post(
        "/graphql",
        json={"query": "{ organization { name } }"},
        headers={"X-API-Key": "kh_" + "x" * 38, "X-Request-Id": "0f1e2d3c-4b5a"},
    )

    assert response.status_code == 401
    assert response.headers["X-Request-Id"] == "0f1e2d3c-4b5a"
    [line] = [e for e in entries(json_lines) if "refused" in e["message"]]
    assert line["requestId"] == "0f1e2d3c-4b5a"
    assert "organizationId" not in line


@pytest.mark.parametrize(
    "sent", ["kh_3fA9x7QkZ1b2C3d4E5f6G7h8I9j0K1l2M3n4", "a b", "x" * 65, "ünïcode"]
)
async def test_a_request_id_that_could_carry_anything_else_is_replaced(
    client: httpx.AsyncClient, sent: str
) -> None:
    response = await client.get("/healthz", headers={b"X-Request-Id": sent.encode()})

    answered = response.headers["X-Request-Id"]
    assert answered != sent
    assert sent not in answered


async def test_each_request_gets_an_id_of_its_own(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(3)}

    assert len(ids) == 3


def test_the_text_format_names_the_request_only_inside_one() -> None:
    record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)

    line = TextFormatter().format(record)

    assert line.endswith(" WARNING app.x hello you")


@pytest.mark.parametrize("log_format", list(LogFormat))
def test_the_configuration_sends_uvicorns_lines_through_the_same_format(
    log_format: LogFormat,
) -> None:
    config = logging_config("info", log_format)

    assert config["root"]["level"] == "INFO"
    formatter = config["formatters"]["keyhouse"]["()"]
    assert formatter.endswith("JsonFormatter" if log_format is LogFormat.JSON else "TextFormatter")
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
