"""The web application: GraphQL control plane, data-plane routes, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from graphql import introspection_from_schema
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Plane, Settings
from app.dashboard.routes import dashboard_routes
from app.graphql.schema import KeyhouseSchema, build_schema
from app.graphql.view import KeyhouseGraphQL
from app.health import readiness
from app.keys.router import DataPlaneRoute, data_plane_routes
from app.kit.logs import REQUEST_ID, request_id_for
from app.leaks.router import leak_report_route
from app.metrics import (
    BROADCAST_CONNECTED,
    HTTP_REQUEST_DURATION,
    KEY_CACHE_ENTRIES,
    MULTIPROCESS_DIRECTORY,
    RATE_LIMIT_SHARED,
    USAGE_BUFFERED_BUCKETS,
    USAGE_OLDEST_UNFLUSHED,
    exposition,
    forget_this_process,
)
from app.operators.router import operator_routes
from app.runtime import Runtime
from app.usage.router import usage_csv_route

if TYPE_CHECKING:
    from app.kit.tracing import Tracing

logger = logging.getLogger(__name__)


# The routes requests are timed under; any other path is 'other' (labels stay a fixed set).
_TIMED_ROUTES = frozenset(
    {
        "/v1/keys/verify",
        "/v1/auth",
        "/v1/usage.csv",
        "/v1/keys/leaked",
        "/v1/operator/usage.csv",
        "/graphql",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)
_timers: dict[tuple[str, int], Any] = {}


def _timer(path: str, status: int) -> Any:
    """The histogram child for a route and status, made once (no label lookup per request)."""
    route = path if path in _TIMED_ROUTES else "other"
    if path.startswith("/dashboard"):
        route = "/dashboard"
    child = _timers.get((route, status))
    if child is None:
        child = _timers[(route, status)] = HTTP_REQUEST_DURATION.labels(route, str(status))
    return child


class KeyhouseApp(FastAPI):
    """FastAPI, with the data-plane paths answered before its middleware stack and router.

    Everything else (GraphQL, health, metrics) goes through FastAPI as usual. Every HTTP
    request is timed by route and status.
    """

    data_plane: dict[str, DataPlaneRoute]
    # With tracing on: this app inside OpenTelemetry's middleware, which every request goes through.
    traced: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif self.traced is not None:
            await self.traced(scope, receive, send)
        else:
            await self.answer(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an HTTP request, timed by route and status and named by its request id."""
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before it starts an answer
        request_id = request_id_for(scope["headers"])
        REQUEST_ID.set(request_id)  # this request's task only: its log lines name it
        echoed = (b"x-request-id", request_id.encode())

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            route = self.data_plane.get(scope["path"])
            if route is not None:
                await route(scope, receive, timed_send)
            else:
                await super().__call__(scope, receive, timed_send)
        finally:
            _timer(scope["path"], status).observe(time.perf_counter() - started)

    def route_of(self, scope: Scope) -> str | None:
        """The route template a request matches (``/dashboard/link/{token}``), as Starlette's
        router chooses it; None for none. Spans are named by it: the path itself can hold a key
        or a link's token."""
        path: str = scope["path"]
        if path in self.data_plane:
            return path
        partial: str | None = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            template: str | None = getattr(route, "path", None)
            if match is Match.FULL:
                return template
            if match is Match.PARTIAL and partial is None:
                partial = template
        return partial


def observe_state(runtime: Runtime) -> None:
    """The gauges that describe the running service, read now (when /metrics is scraped)."""
    KEY_CACHE_ENTRIES.set(len(runtime.cache))
    recorder = runtime.recorder
    USAGE_BUFFERED_BUCKETS.set(recorder.pending_buckets)
    oldest = recorder.oldest_pending_minute()
    USAGE_OLDEST_UNFLUSHED.set(0 if oldest is None else max(0.0, time.time() - oldest * 60))
    BROADCAST_CONNECTED.set(1 if runtime.broadcast.live else 0)
    RATE_LIMIT_SHARED.set(1 if runtime.limiter.backend == "redis" else 0)


# With several workers, the one answering /metrics cannot read the others' state: each writes
# its own gauges this often, and a scrape shows them at most this old.
STATE_INTERVAL_SECONDS = 1.0


async def observe_state_periodically(runtime: Runtime) -> None:
    while True:
        observe_state(runtime)
        await asyncio.sleep(STATE_INTERVAL_SECONDS)


def schema_introspection(schema: KeyhouseSchema) -> Route:
    """The schema's introspection at ``GET /graphql/schema.json``, without a key.

    GraphiQL's docs and autocomplete read it at once, before a key is entered (its introspection
    query is answered from here, not sent to ``/graphql``); the schema is public anyway
    (``schema.graphql`` is in the repository). Every request to ``/graphql`` itself still needs
    a key, and counts as its use.
    """
    body = orjson.dumps(introspection_from_schema(schema._schema, input_value_deprecation=True))

    async def introspection(_: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(body, media_type="application/json", headers=headers)

    return Route("/graphql/schema.json", introspection, methods=["GET"])


def tracing_for(settings: Settings) -> Tracing | None:
    """This process's tracing when KEYHOUSE_OTEL_ENDPOINT is set, else None; OpenTelemetry's
    SDK and instrumentations (the optional ``otel`` extra) are imported only then."""
    if settings.otel_endpoint is None:
        return None
    from app.kit.tracing import tracing_to

    return tracing_to(settings.otel_endpoint)


def control_plane_routes(runtime: Runtime) -> list[BaseRoute]:
    """/graphql and what is served beside it: the routes of every plane but the data plane."""
    schema = build_schema(runtime.settings)
    routes: list[BaseRoute] = [
        # An ASGI app as endpoint: Starlette hands it the raw request. Every method reaches it,
        # so that even a PUT is refused with a GraphQL response rather than Starlette's text.
        Route("/graphql", KeyhouseGraphQL(schema, runtime)),
        schema_introspection(schema),
        # Usage for analysts' tools: the `usage` query's figures as CSV, read from the database
        # like GraphQL, so served by the control plane.
        usage_csv_route(runtime),
    ]
    # Leak reports from secret scanners: they write (revoke), so the control plane.
    leaks = leak_report_route(runtime)
    if leaks is not None:
        routes.append(leaks)
    # The operator plane's CSV and the dashboard sign-in links' use.
    routes.extend(operator_routes(runtime))
    # The dashboard is a client of the control plane, served beside it.
    routes.extend(dashboard_routes())
    return routes


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The app, with a runtime of its own unless given one: each worker of ``--workers`` makes
    its own here, its tracing included."""
    if runtime is None:
        settings = settings or Settings()
        runtime = Runtime.create(settings, tracing=tracing_for(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        state = None
        if MULTIPROCESS_DIRECTORY is not None:
            state = asyncio.create_task(observe_state_periodically(runtime), name="metrics-state")
        # Everything allocated so far lives as long as the process; keeping it out of the
        # collector's generations removes the full-collection pauses that dominate p99.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if state is not None:
                state.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await state
            await runtime.stop()
            forget_this_process()

    app = KeyhouseApp(
        title="keyhouse",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # No OpenTelemetry here: keeps FastAPI from checking for providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    plane = runtime.settings.plane
    app.data_plane = data_plane_routes(runtime) if plane is not Plane.CONTROL else {}

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        status, body = await readiness(runtime)
        return JSONResponse(body, status_code=status)

    async def metrics(_: Request) -> Response:
        observe_state(runtime)
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    if plane is not Plane.DATA:
        app.router.routes.extend(control_plane_routes(runtime))
    app.router.routes.extend(
        [
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )
    if runtime.tracing is not None:
        app.traced = runtime.tracing.requests(app.answer, app.route_of)
    return app
