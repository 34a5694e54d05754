"""The dashboard's addresses: its pages (one HTML shell, the views are drawn by its script),
its static files, its GraphQL documents, and the GraphiQL page served at ``GET /graphql``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from app.dashboard.assets import QUERIES, STATIC, AssetDirectory, not_found

# Every page of the dashboard has its own address, so that reload and back work; the shell is
# the same for each and its script draws the page the address names.
PAGES = ("overview", "keys", "usage", "policy", "webhooks", "audit-log", "sign-in")

static_files = AssetDirectory(STATIC, immutable_under="vendor")
query_documents = AssetDirectory(QUERIES)


def graphiql_page(request: Request) -> Response:
    page = static_files.get("graphiql.html")
    assert page is not None, "graphiql.html ships with the package"
    return page.response(request)


async def _shell(request: Request) -> Response:
    page = request.path_params.get("page", "overview")
    shell = static_files.get("index.html")
    if page not in PAGES or shell is None:
        return not_found()
    return shell.response(request)


async def _static(request: Request) -> Response:
    asset = static_files.get(request.path_params["path"])
    return not_found() if asset is None else asset.response(request)


async def _query(request: Request) -> Response:
    name: str = request.path_params["name"]
    asset = query_documents.get(f"{name}.graphql") if name.isidentifier() else None
    return not_found() if asset is None else asset.response(request)


async def _link_page(_request: Request) -> Response:
    """A sign-in link's page: its script spends the token in the address (a POST), never the
    GET that shows it."""
    page = static_files.get("link.html")
    assert page is not None, "link.html ships with the package"
    return page.response(_request)


async def _to_overview(_: Request) -> Response:
    return RedirectResponse("/dashboard/overview", status_code=308)


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/dashboard", _to_overview, methods=["GET"]),
        Route("/dashboard/", _to_overview, methods=["GET"]),
        Route("/dashboard/static/{path:path}", _static, methods=["GET"]),
        Route("/dashboard/queries/{name}.graphql", _query, methods=["GET"]),
        Route("/dashboard/link/{token}", _link_page, methods=["GET"]),
        Route("/dashboard/{page}", _shell, methods=["GET"]),
    ]
