"""Tracing with OpenTelemetry, when KEYHOUSE_OTEL_ENDPOINT names a collector (the ``otel`` extra).

Three kinds of span, one trace per request: the request (named by its route template), the
verification of a key (the verifier opens it around its one function), and each database
statement (SQLAlchemy's instrumentation on the engine). Unset, nothing here runs and nothing of
OpenTelemetry's SDK, exporter or instrumentations is imported: this module is imported only
then (FastAPI itself imports the API).

A span never carries what a request presented. The instrumentation sees each request through
``_seen``: its route template for its path (a key pasted into the path, a one-time link's token),
no query string (``?key=``) and no header but the trace context's (``X-API-Key``,
``Authorization``, cookies). Statements are recorded as SQL text with placeholders: their
parameters, the key hashes among them, are not (nor are they in a failed statement's error: the
engine hides them). And the exporter sends no free text: an exception's message and a status's
description can quote a request or a row a database refused, so only the exception's type goes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, Tracer
from opentelemetry.util.http import ExcludeList, get_excluded_urls, parse_excluded_urls
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

SERVICE_NAME = "keyhouse"
# The only request headers the instrumentation is shown: W3C trace context and baggage, so that a
# caller's trace continues here. Header capture (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*)
# therefore finds no other.
_PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
# Load balancers' probes and Prometheus's scrapes come every few seconds and answer no question a
# trace would; OTEL_PYTHON_ASGI_EXCLUDED_URLS (or OTEL_PYTHON_EXCLUDED_URLS) replaces the list.
_UNTRACED_ROUTES = "/healthz$,/readyz$,/metrics$"
_EXCLUDED_URLS_VARIABLES = ("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS")
# The methods HTTP defines. A client chooses the method, so it could be anything, a key even:
# the instrumentation is shown any other as "_OTHER" (its own word for one), whatever
# OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS says.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
# Where the request as sent waits, in the scope the instrumentation sees, for the app.
_REQUEST = "keyhouse.request"


def traces_url(endpoint: str) -> str:
    """The collector's OTLP/HTTP traces address: its base address and ``/v1/traces`` (as the
    standard OTEL_EXPORTER_OTLP_ENDPOINT), or that address already."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


class Tracing:
    """One process's tracer provider: spans batched in a background thread and exported.

    Made in the process that serves (each worker of ``--workers`` makes its own)."""

    def __init__(self, exporter: SpanExporter) -> None:
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read here; keyhouse's name fills
        # in only for a deployment that named none.
        resource = Resource.create({"process.pid": os.getpid()})  # which worker
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        # The sampler comes from OTEL_TRACES_SAMPLER, the batching from OTEL_BSP_*.
        self.provider: TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(_WithoutFreeText(exporter)))
        self.tracer: Tracer = self.provider.get_tracer("keyhouse")

    def requests(self, app: ASGIApp, route_of: Callable[[Scope], str | None]) -> ASGIApp:
        """``app`` with a span for each HTTP request, named by ``route_of`` (None: no route)."""
        return _TracedRequests(app, route_of, self.provider)

    def database(self, engine: AsyncEngine) -> None:
        """A span for each statement ``engine`` runs, a child of the span current then."""
        # The engine's tracer alone: SQLAlchemyInstrumentor().instrument() would also patch
        # create_engine and Engine.connect for the whole process, once per process. Its pool
        # metrics are not kept (keyhouse's metrics are Prometheus's).
        meter = NoOpMeterProvider().get_meter("opentelemetry.instrumentation.sqlalchemy")
        EngineTracer(  # type: ignore[no-untyped-call]  # the package has no annotations
            self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"),
            engine.sync_engine,
            meter.create_up_down_counter("db.client.connections.usage"),
            enable_commenter=False,  # a comment in each statement would defeat statement caches
        )

    def force_flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        """Export what is still batched, then stop (bounded by OTEL_BSP_EXPORT_TIMEOUT)."""
        self.provider.shutdown()


def tracing_to(endpoint: str) -> Tracing:
    """Tracing to the collector at ``endpoint`` (KEYHOUSE_OTEL_ENDPOINT)."""
    # Headers, timeout, compression and certificates: the OTEL_EXPORTER_OTLP_* variables.
    return Tracing(OTLPSpanExporter(endpoint=traces_url(endpoint)))


class _TracedRequests:
    """OpenTelemetry's ASGI middleware around the app, shown each request as ``_seen`` makes it,
    while the app answers the request as it was sent."""

    def __init__(
        self, app: ASGIApp, route_of: Callable[[Scope], str | None], provider: TracerProvider
    ) -> None:
        self._app = app
        self._route_of = route_of
        self._middleware = OpenTelemetryMiddleware(
            self._answer,
            excluded_urls=_excluded_urls(),
            default_span_details=_span_details,
            tracer_provider=provider,
            meter_provider=NoOpMeterProvider(),
            # A span per ASGI message would outnumber the ones that answer questions.
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._middleware(_seen(scope, self._route_of(scope)), receive, send)

    async def _answer(self, seen: Scope, receive: Receive, send: Send) -> None:
        await self._app(seen[_REQUEST], receive, send)


def _excluded_urls() -> ExcludeList:
    """The routes not traced (matched against ``http://HOST/ROUTE``)."""
    if any(variable in os.environ for variable in _EXCLUDED_URLS_VARIABLES):
        return get_excluded_urls("ASGI")
    return parse_excluded_urls(_UNTRACED_ROUTES)


def _seen(scope: Scope, route: str | None) -> Scope:
    """The request as the instrumentation may record it: the route template for the path, no
    query string, only the trace context's headers, a method HTTP defines or "_OTHER"; the
    request itself rides along for the app."""
    path = route or ""
    method = scope["method"]
    return {
        **scope,
        "method": method if method in _METHODS else "_OTHER",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [header for header in scope["headers"] if header[0] in _PROPAGATION_HEADERS],
        _REQUEST: scope,
    }


def _span_details(seen: Scope) -> tuple[str, dict[str, Any]]:
    """``POST /v1/keys/verify``; ``HTTP /v1/keys/verify`` for a method HTTP does not define; a
    request that matched no route is named by its method alone."""
    method = "HTTP" if seen["method"] == "_OTHER" else seen["method"]
    route = seen["path"]
    if not route:
        return method, {}
    return f"{method} {route}", {"http.route": route}


class _WithoutFreeText(SpanExporter):
    """An exporter's stand-in that passes each span on without the free text it may hold: an
    event keeps only ``exception.type``, a status only its code."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._exporter.export([_without_free_text(span) for span in spans])

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _without_free_text(span: ReadableSpan) -> ReadableSpan:
    if not span.events and span.status.description is None:
        return span
    events = [
        Event(
            event.name,
            {key: value for key, value in event.attributes.items() if key == "exception.type"}
            if event.attributes
            else None,
            event.timestamp,
        )
        for event in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
