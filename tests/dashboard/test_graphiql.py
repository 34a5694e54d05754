"""keyhouse's own GraphiQL page at ``GET /graphql``: served with its assets by keyhouse, under a
strict Content-Security-Policy, with the schema readable before a key is entered."""

from __future__ import annotations

import re

import httpx
from graphql import build_client_schema, build_schema, lexicographic_sort_schema, print_schema

from app.dashboard.assets import STATIC
from tests.dashboard.support import assert_strict_policy, local_references
from tests.graphql.test_schema import SCHEMA_FILE

BROWSER = {"Accept": "text/html,application/xhtml+xml"}


async def test_the_graphiql_page_is_keyhouses_own_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/graphql", headers=BROWSER)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert_strict_policy(page)
    assert "<script>" not in page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "an inline script"
    assert not re.search(r"https?://", page.text), "an address outside keyhouse"


async def test_every_asset_of_the_graphiql_page_is_served_by_keyhouse(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/graphql", headers=BROWSER)
    references = local_references(page.text)

    assert len(references) == 6  # React, ReactDOM, GraphiQL, its stylesheet, the page's own
    for reference in references:
        asset = await client.get(reference, headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200, reference
        assert_strict_policy(asset)
    vendored = await client.get(references[0], headers={"Accept-Encoding": "gzip"})
    assert vendored.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert vendored.headers["content-encoding"] == "gzip"


def test_the_graphiql_script_never_reaches_outside_keyhouse() -> None:
    script = (STATIC / "graphiql.js").read_text()

    assert not re.search(r"https?://", script)
    assert "localStorage" not in script
    assert "shouldPersistHeaders: false" in script


async def test_the_schema_is_readable_without_a_key(client: httpx.AsyncClient) -> None:
    answer = await client.get("/graphql/schema.json")

    assert answer.status_code == 200
    served = build_client_schema(answer.json())
    # The same schema as the committed SDL (which is public too).
    committed = build_schema(SCHEMA_FILE.read_text())
    assert print_schema(lexicographic_sort_schema(served)) == print_schema(
        lexicographic_sort_schema(committed)
    )


async def test_graphql_requests_still_need_a_key(client: httpx.AsyncClient) -> None:
    answer = await client.post("/graphql", json={"query": "{ __schema { queryType { name } } }"})

    assert answer.status_code == 401
