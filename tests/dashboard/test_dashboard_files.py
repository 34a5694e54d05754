"""The dashboard at ``/dashboard``: its pages, scripts and GraphQL documents, served by keyhouse
from the package, compressed, cacheable and under a strict Content-Security-Policy."""

from __future__ import annotations

import re

import httpx
import pytest

from app.dashboard.assets import COMPRESS_FROM_BYTES, QUERIES, STATIC, AssetDirectory
from tests.dashboard.support import assert_strict_policy, local_references

SCRIPTS = sorted(STATIC.glob("*.js"))
DASHBOARD_SCRIPTS = [path for path in SCRIPTS if path.name != "graphiql.js"]
PAGES = ["overview", "keys", "usage", "policy", "audit-log", "sign-in"]


def operations_sent() -> set[str]:
    """Every operation the dashboard's scripts name in a call to ``request``."""
    found: set[str] = set()
    for path in DASHBOARD_SCRIPTS:
        found |= set(re.findall(r"\b(?:request|useOperation)\(\s*\"(\w+)\"", path.read_text()))
    return found


def test_every_operation_the_dashboard_sends_is_a_file_of_frontend_queries() -> None:
    files = {path.stem for path in QUERIES.glob("*.graphql")}

    sent = operations_sent()

    assert sent - files == set()
    assert {"KeysPage", "CreateApiKey", "RevokeApiKey", "RotateApiKey", "UsageChart"} <= sent


def test_only_the_api_module_talks_to_keyhouse() -> None:
    """Documents come from /dashboard/queries/, never from a string in a script: the one module
    that fetches sends only those."""
    for path in DASHBOARD_SCRIPTS:
        text = path.read_text()
        if path.name != "api.js":
            assert "fetch(" not in text, path.name
        assert not re.search(r"https?://", text), path.name
        assert not re.search(r"\b(?:query|mutation)\s+\w+\s*[({]", text), path.name
        assert "localStorage." not in text, path.name
        assert ".cookie" not in text, path.name


@pytest.mark.parametrize("page", PAGES)
async def test_each_page_has_its_own_address(client: httpx.AsyncClient, page: str) -> None:
    answer = await client.get(f"/dashboard/{page}")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert_strict_policy(answer)
    assert not re.search(r"<script(?![^>]*\bsrc=)", answer.text), "an inline script"
    assert not re.search(r"https?://", answer.text)


async def test_the_dashboard_root_leads_to_the_overview(client: httpx.AsyncClient) -> None:
    answer = await client.get("/dashboard")

    assert answer.status_code == 308
    assert answer.headers["location"] == "/dashboard/overview"


async def test_every_file_the_shell_loads_is_served_compressed(client: httpx.AsyncClient) -> None:
    shell = await client.get("/dashboard/overview")

    for reference in local_references(shell.text):
        if reference.startswith("data:"):
            continue
        asset = await client.get(reference, headers={"Accept-Encoding": "gzip"})
        assert asset.status_code == 200, reference
        if len(asset.content) >= COMPRESS_FROM_BYTES:  # httpx has decoded it
            assert asset.headers["content-encoding"] == "gzip", reference
        assert asset.headers["etag"], reference


async def test_an_unchanged_file_is_answered_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/dashboard/static/app.js")
    again = await client.get(
        "/dashboard/static/app.js", headers={"If-None-Match": first.headers["etag"]}
    )

    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""


async def test_the_documents_are_served_from_the_package(client: httpx.AsyncClient) -> None:
    answer = await client.get("/dashboard/queries/KeysPage.graphql")

    assert answer.status_code == 200
    assert answer.text == (QUERIES / "KeysPage.graphql").read_text()


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/settings",
        "/dashboard/static/missing.js",
        "/dashboard/static/../assets.py",
        "/dashboard/static/%2E%2E/assets.py",
        "/dashboard/static/.hidden",
        "/dashboard/queries/Missing.graphql",
        "/dashboard/queries/..%2Fschema.graphql",
    ],
)
async def test_nothing_else_is_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)

    assert answer.status_code == 404


@pytest.mark.parametrize(
    "spelling", ["app.js/", "./app.js", ".//app.js", "vendor/../app.js", "vendor//..//app.js"]
)
def test_a_file_is_served_under_its_one_spelling_only(spelling: str) -> None:
    # Each other spelling would be read, compressed and kept apart: unbounded memory for
    # anyone who can reach the dashboard, no key needed.
    files = AssetDirectory(STATIC)
    assert files.get("app.js") is not None

    assert files.get(spelling) is None
    assert list(files._loaded) == ["app.js"]


async def test_the_shell_preloads_every_module(client: httpx.AsyncClient) -> None:
    """The browser fetches all modules at once instead of one level of imports at a time."""
    shell = await client.get("/dashboard/overview")

    preloaded = set(
        re.findall(r'<link rel="modulepreload" href="/dashboard/static/([^"]+)"', shell.text)
    )
    # app.js is the shell's entry; link.js the entry of the sign-in link's own page.
    modules = {path.name for path in DASHBOARD_SCRIPTS} - {"app.js", "link.js"}
    assert modules <= preloaded
    assert all((STATIC / name).is_file() for name in preloaded)
