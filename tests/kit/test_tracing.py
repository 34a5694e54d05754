"""Tracing (KEYHOUSE_OTEL_ENDPOINT): a request, the verification of its key and the database
statements under it are one trace, exported with the SDK's in-memory exporter here; no span
holds what a request presented; unset, none of OpenTelemetry's SDK is even imported."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.auth.secret import hash_secret
from app.config import TRACING_MODULES, Settings
from app.keys.verification import VERIFICATION_SPAN
from app.kit.tracing import Tracing, traces_url
from app.main import create_app, tracing_for
from app.runtime import Runtime
from tests.conftest import REDIS_URL, require_redis
from tests.processes import (
    ROOT,
    environment_without_settings,
    free_port,
    healthy,
    keyhouse_command,
    keyhouse_json,
    started,
    wait_until,
)
from tests.support import IssuedKey, Tenant, empty_database, gql, make_key, make_tenant

VERIFY = "/v1/keys/verify"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
async def traced(
    settings: Settings, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A traced instance, exporting to ``exporter``, and a client for it."""
    runtime = Runtime.create(settings, tracing=Tracing(exporter))
    await empty_database(runtime)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as client:
            yield runtime, client


async def _tenant_and_key(
    runtime: Runtime, exporter: InMemorySpanExporter
) -> tuple[Tenant, IssuedKey]:
    """An organization and a key, and the exporter emptied of the statements that made them."""
    tenant = await make_tenant(runtime, "Acme")
    key = await make_key(runtime, tenant, "ci")
    _forget(runtime, exporter)
    return tenant, key


def _forget(runtime: Runtime, exporter: InMemorySpanExporter) -> None:
    """The spans ended so far exported and forgotten: a test looks at the ones after."""
    _exported(runtime, exporter)
    exporter.clear()


def _exported(runtime: Runtime, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    assert runtime.tracing is not None
    runtime.tracing.force_flush()
    return list(exporter.get_finished_spans())


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    [span] = [span for span in spans if span.name == name]
    return span


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _statements(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is SpanKind.CLIENT]


def _trace_ids(spans: list[ReadableSpan]) -> set[int]:
    return {span.context.trace_id for span in spans if span.context is not None}


async def test_a_verify_request_is_one_trace_the_request_its_verification_and_its_lookup(
    traced: tuple[Runtime, httpx.AsyncClient], exporter: InMemorySpanExporter
) -> None:
    runtime, client = traced
    tenant, key = await _tenant_and_key(runtime, exporter)

    response = await client.post(VERIFY, json={"key": key.secret})

    assert response.json()["valid"] is True
    spans = _exported(runtime, exporter)
    request = _one(spans, f"POST {VERIFY}")
    assert request.kind is SpanKind.SERVER
    assert request.parent is None
    assert request.attributes is not None
    assert request.attributes["http.route"] == VERIFY
    [verification] = _children(spans, request)
    assert verification.name == VERIFICATION_SPAN
    assert verification.attributes == {
        "keyhouse.verification.valid": True,
        "keyhouse.verification.outcome": "VALID",
        "keyhouse.organization.id": tenant.organization_id,
        "keyhouse.key.id": key.id,
    }
    # The key was not cached yet: its lookup's statements are the verification's children.
    lookup = _children(spans, verification)
    assert lookup
    assert lookup == _statements(lookup)
    assert _trace_ids(spans) == _trace_ids([request])


async def test_a_graphql_request_traces_its_key_and_its_queries_in_one_trace(
    traced: tuple[Runtime, httpx.AsyncClient], exporter: InMemorySpanExporter
) -> None:
    runtime, client = traced
    tenant, _ = await _tenant_and_key(runtime, exporter)

    result = await gql(client, "{ organization { name } }", key=tenant.admin_key)

    assert result.data == {"organization": {"name": "Acme"}}
    spans = _exported(runtime, exporter)
    request = _one(spans, "POST /graphql")
    verification = _one(spans, VERIFICATION_SPAN)
    assert verification in _children(spans, request)
    assert verification.attributes is not None
    assert verification.attributes["keyhouse.verification.outcome"] == "VALID"
    assert verification.attributes["keyhouse.organization.id"] == tenant.organization_id
    # The key's lookup under the verification, the organization's query under the request.
    assert _statements(_children(spans, verification))
    assert _statements(_children(spans, request))
    assert _trace_ids(spans) == _trace_ids([request])


@pytest.mark.parametrize(
    ("sent", "outcome"), [("kh_nope", "MALFORMED"), ("", "MISSING"), ("revoked", "REVOKED")]
)
async def test_a_refusal_is_traced_with_its_reason(
    traced: tuple[Runtime, httpx.AsyncClient],
    exporter: InMemorySpanExporter,
    sent: str,
    outcome: str,
) -> None:
    runtime, client = traced
    tenant, key = await _tenant_and_key(runtime, exporter)
    if sent == "revoked":
        revoked = await gql(
            client,
            "mutation R($id: ID!) { revokeApiKey(id: $id) { userErrors { code } } }",
            {"id": key.id},
            key=tenant.admin_key,
        )
        assert revoked.data == {"revokeApiKey": {"userErrors": []}}
        sent = key.secret
    _forget(runtime, exporter)

    await client.post(VERIFY, json={"key": sent})

    attributes = _one(_exported(runtime, exporter), VERIFICATION_SPAN).attributes
    assert attributes is not None
    assert attributes["keyhouse.verification.valid"] is False
    assert attributes["keyhouse.verification.outcome"] == outcome
    # Only a known key names its organization.
    assert ("keyhouse.organization.id" in attributes) is (outcome == "REVOKED")


def _texts(span: ReadableSpan) -> list[str]:
    """Every text a span would export: name, attributes, events, status, links."""
    texts = [span.name, str(span.status.description)]
    attributes: list[Any] = [span.attributes or {}]
    attributes += [event.attributes or {} for event in span.events]
    attributes += [link.attributes or {} for link in span.links]
    for mapping in attributes:
        for name, value in mapping.items():
            texts += [name, str(value)]
    texts += [event.name for event in span.events]
    return texts


async def test_no_span_holds_a_presented_key_its_hash_or_its_hint(
    traced: tuple[Runtime, httpx.AsyncClient], exporter: InMemorySpanExporter
) -> None:
    runtime, client = traced
    tenant, key = await _tenant_and_key(runtime, exporter)
    admin_hash = hash_secret(tenant.admin_key)
    exporter.clear()

    # The key everywhere a request can put it: the body, each header, the query string, the
    # path; refused and accepted; on the data plane, forward auth and GraphQL.
    await client.post(VERIFY, json={"key": key.secret})
    await client.post(f"{VERIFY}?key={key.secret}", json={"key": key.secret})
    await client.post(f"{VERIFY}/{key.secret}", json={})
    await client.request(key.secret, VERIFY, json={"key": key.secret})
    await client.get("/v1/auth", headers={"X-API-Key": key.secret})
    await client.get(f"/v1/auth?key={key.secret}")
    await client.get("/v1/auth", headers={"Authorization": f"Bearer {key.secret}"})
    await client.get(f"/dashboard/link/{key.secret}")
    await gql(client, "{ apiKeys { nodes { hint } } }", key=tenant.admin_key)
    await gql(client, "{ organization { name } }", key=f"{tenant.admin_key}x")
    await client.post(f"/graphql?key={tenant.admin_key}", json={"query": "{ scopes { name } }"})

    spans = _exported(runtime, exporter)
    assert len(_statements(spans)) > 0
    secrets = {key.secret, hash_secret(key.secret), key.hint, tenant.admin_key, admin_hash}
    # Also without the prefix, the hint's first half, and in any case (a method is upper-cased).
    secrets = {secret.lower() for secret in secrets | {key.secret[3:], key.hint.split("…")[0]}}
    exported = [text for span in spans for text in _texts(span)]
    exported += [str(value) for span in spans for value in span.resource.attributes.values()]
    assert [text for text in exported if any(secret in text.lower() for secret in secrets)] == []
    # A path that matched no route is named by its method alone.
    assert {span.name for span in spans if span.kind is SpanKind.SERVER} == {
        f"POST {VERIFY}",
        f"HTTP {VERIFY}",
        "POST",
        "GET /v1/auth",
        "GET /dashboard/link/{token}",
        "POST /graphql",
    }


async def test_a_failed_statement_is_exported_without_its_error_message(
    traced: tuple[Runtime, httpx.AsyncClient], exporter: InMemorySpanExporter
) -> None:
    runtime, _ = traced
    _forget(runtime, exporter)
    value = "s3cr3t-value"
    # PostgreSQL quotes the value it could not read in its message; SQLite names the table.
    sql = "SELECT * FROM no_such" if runtime.settings.is_sqlite else "SELECT CAST(:v AS integer)"

    with pytest.raises(DBAPIError):
        async with runtime.engine.connect() as connection:
            await connection.execute(text(sql), {"v": value})

    [failed] = [s for s in _exported(runtime, exporter) if s.status.status_code is StatusCode.ERROR]
    assert failed.status.description is None
    assert all(set(event.attributes or {}) <= {"exception.type"} for event in failed.events)
    assert [text for text in _texts(failed) if value in text] == []


def test_an_exception_is_exported_with_its_type_alone(exporter: InMemorySpanExporter) -> None:
    tracing = Tracing(exporter)

    with (
        pytest.raises(ValueError, match="kh_"),
        tracing.tracer.start_as_current_span("failing"),
    ):
        raise ValueError("kh_the-request-sent-this")
    tracing.shutdown()

    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None
    assert [dict(event.attributes or {}) for event in span.events] == [
        {"exception.type": "ValueError"}
    ]


def test_the_collector_address_is_its_base_or_its_traces_address() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://otel.example/") == "https://otel.example/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "http://"])
def test_an_endpoint_that_is_not_an_http_address_is_refused(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        Settings(otel_endpoint=endpoint)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://collector\x00:4318",
        "http://collector\ud800:4318",
        "http://collector\x1b[31m:4318",
        "http://collector:4318/" + "a" * 20_000,
    ],
    ids=["NUL", "surrogate", "escape", "huge"],
)
def test_a_hostile_endpoint_is_refused_without_being_quoted(endpoint: str) -> None:
    refusal = r"the collector's address (holds|is longer)"
    with pytest.raises(ValidationError, match=refusal) as refused:
        Settings(otel_endpoint=endpoint)

    assert "collector\x00" not in str(refused.value)
    assert "a" * 100 not in str(refused.value)


def test_an_empty_endpoint_is_unset() -> None:
    settings = Settings(otel_endpoint="")

    assert settings.otel_endpoint is None
    assert tracing_for(settings) is None


def test_the_endpoint_without_the_extra_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # As an environment without the extra: the module cannot be found.
    monkeypatch.setitem(sys.modules, TRACING_MODULES[0], None)

    with pytest.raises(ValidationError, match=r"pip install 'keyhouse\[otel\]'"):
        Settings(otel_endpoint="http://127.0.0.1:4318")


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**environment_without_settings(), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_serve_without_the_extra_says_so_in_one_line() -> None:
    done = _python(
        f"import sys; sys.modules[{TRACING_MODULES[0]!r}] = None\n"
        "from app.cli import main; sys.argv = ['keyhouse', 'serve']; main()",
        KEYHOUSE_OTEL_ENDPOINT="http://127.0.0.1:4318",
    )

    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "KEYHOUSE_OTEL_ENDPOINT" in line
    assert "pip install 'keyhouse[otel]'" in line


@pytest.mark.slow
def test_unset_the_app_imports_nothing_of_the_sdk_and_traces_nothing(tmp_path: Any) -> None:
    # (redis-py itself imports the SDK's metrics when they are installed: not keyhouse's doing.)
    done = _python(
        "import sys\n"
        "from app.main import create_app\n"
        "app = create_app()\n"
        "assert app.traced is None and app.state.runtime.tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'opentelemetry.sdk.trace', 'opentelemetry.exporter', 'opentelemetry.instrumentation'))))",
        KEYHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_probes_and_scrapes_are_not_traced(
    traced: tuple[Runtime, httpx.AsyncClient], exporter: InMemorySpanExporter
) -> None:
    runtime, client = traced
    _forget(runtime, exporter)

    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200
    await client.get(VERIFY)

    served = {span.name for span in _exported(runtime, exporter) if span.kind is SpanKind.SERVER}
    assert served == {f"GET {VERIFY}"}


class _Collector(ThreadingHTTPServer):
    """An OpenTelemetry collector's OTLP/HTTP receiver, as far as keyhouse can tell: it keeps
    each export's body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receiver)
        self.exports: list[tuple[str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[int, str, dict[str, str]]]:
        """(process id, name, string attributes) of every span exported so far."""
        found = []
        for _, body in list(self.exports):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value for a in resource_spans.resource.attributes}
                pid = resource["process.pid"].int_value
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        strings = {a.key: a.value.string_value for a in span.attributes}
                        found.append((pid, span.name, strings))
        return found


class _Receiver(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.exports.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    collector = _Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    yield collector
    collector.shutdown()
    collector.server_close()


@pytest.mark.slow
@pytest.mark.redis
def test_each_worker_exports_its_own_spans_to_the_collector(
    collector: _Collector, tmp_path: Any
) -> None:
    require_redis()
    env = {
        **environment_without_settings(),
        "KEYHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'keyhouse.db'}",
        "KEYHOUSE_REDIS_URL": REDIS_URL,
        "KEYHOUSE_OTEL_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # milliseconds: export soon after each request
    }
    created = keyhouse_json(env, "init", "--organization", "Acme")
    port = free_port()
    command = [*keyhouse_command(), "serve", "--port", str(port), "--workers", "2"]
    with started(command, tmp_path / "serve.log", env=env, cwd=ROOT) as process:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), process, "keyhouse serve", tmp_path / "serve.log")
        verified_by: set[int] = set()
        # A new connection each time; the kernel spreads them over the workers.
        for _ in range(200):
            body = {"key": created["apiKey"]}
            answer = httpx.post(f"{url}{VERIFY}", json=body, timeout=10, trust_env=False)
            assert answer.json()["valid"] is True
            time.sleep(0.02)
            spans = collector.spans()
            verified_by = {pid for pid, name, _ in spans if name == VERIFICATION_SPAN}
            if len(verified_by) == 2:
                break

    assert len(verified_by) == 2, f"spans from {verified_by}"
    assert {path for path, _ in collector.exports} == {"/v1/traces"}
    key = created["apiKey"]
    secrets = (key.encode(), hash_secret(key).encode(), key[3:].encode())
    assert not any(secret in body for _, body in collector.exports for secret in secrets)
    assert {"keyhouse.organization.id": created["organizationId"]}.items() <= next(
        attributes for _, name, attributes in collector.spans() if name == VERIFICATION_SPAN
    ).items()
