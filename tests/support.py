"""Factories and helpers shared by the tests. Factories return saved objects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Caller
from app.config import Settings
from app.keys import schemas as keys_schemas
from app.keys import service as keys_service
from app.kit.db import session_scope
from app.main import create_app
from app.operators import keys as operator_keys
from app.organizations.service import OrganizationCreated, create_organization
from app.runtime import Runtime


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    admin_key: str
    admin_key_id: str


@dataclass(frozen=True)
class IssuedKey:
    id: str
    secret: str
    hint: str


async def empty_database(runtime: Runtime) -> None:
    """The shared PostgreSQL test database emptied for a test (a SQLite one is the test's own)."""
    if runtime.settings.is_sqlite:
        return
    async with runtime.engine.begin() as connection:
        await connection.execute(
            text(
                "TRUNCATE audit_events, idempotency_records, organization_usage,"
                " usage_buckets, key_usage, webhook_deliveries, webhook_endpoints,"
                " outbox_events, key_supersessions, api_keys, organizations, operator_keys,"
                " operator_audit_events, dashboard_links, dashboard_credentials CASCADE"
            )
        )


async def make_tenant(runtime: Runtime, name: str) -> Tenant:
    async with session_scope(runtime.sessionmaker) as session:
        created = await create_organization(
            session,
            name,
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, OrganizationCreated)
    return Tenant(created.organization.id, created.admin_key.secret, created.admin_key.api_key.id)


async def make_key(
    runtime: Runtime,
    tenant: Tenant,
    name: str,
    scopes: Sequence[str] = ("read:charge_points",),
    *,
    expires_in_days: int | None = None,
) -> IssuedKey:
    caller = Caller(tenant.organization_id, runtime.catalogue.names())
    async with session_scope(runtime.sessionmaker) as session:
        created = await keys_service.create_key(
            session,
            caller,
            keys_schemas.KeyCreate(name=name, scopes=scopes, expires_in_days=expires_in_days),
            catalogue=runtime.catalogue,
            key_prefix=runtime.settings.key_prefix,
            broadcast=runtime.broadcast,
        )
    assert isinstance(created, keys_schemas.KeyCreated), created
    return IssuedKey(created.api_key.id, created.secret, created.api_key.hint)


async def make_operator_key(runtime: Runtime, name: str = "platform") -> IssuedKey:
    async with session_scope(runtime.sessionmaker) as session:
        created = await operator_keys.create_operator_key(
            session, name, key_prefix=runtime.settings.key_prefix
        )
    assert isinstance(created, operator_keys.OperatorKeyCreated), created
    key = created.operator_key
    return IssuedKey(key.id, created.secret, key.hint)


@dataclass
class GraphQLResult:
    response: httpx.Response
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or [])

    @property
    def error_codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    key: str | None,
    operation_name: str | None = None,
    headers: dict[str, str] | None = None,
) -> GraphQLResult:
    sent_headers = dict(headers or {})
    if key is not None:
        sent_headers["X-API-Key"] = key
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    if operation_name is not None:
        payload["operationName"] = operation_name
    sent_headers.setdefault("Content-Type", "application/json")
    # Escaped JSON (httpx's own encoder writes UTF-8, which cannot hold a lone surrogate).
    response = await client.post("/graphql", content=json.dumps(payload), headers=sent_headers)
    return GraphQLResult(response, response.json())


async def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every keyhouse table, to show that a rejected request changed nothing."""
    tables = [
        "organizations",
        "api_keys",
        "key_supersessions",
        "usage_buckets",
        "key_usage",
        "organization_usage",
        "audit_events",
        "idempotency_records",
        "outbox_events",
        "webhook_endpoints",
        "webhook_deliveries",
        "operator_keys",
        "operator_audit_events",
        "dashboard_links",
        "dashboard_credentials",
    ]
    result: dict[str, list[tuple[Any, ...]]] = {}
    async with runtime.engine.connect() as connection:
        for table in tables:
            rows = (await connection.execute(text(f"SELECT * FROM {table}"))).all()
            result[table] = sorted((tuple(row) for row in rows), key=repr)
    return result


@dataclass
class StatementLog:
    statements: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.statements)


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[StatementLog]:
    """Every SQL statement sent through ``engine`` inside the block (database round trips)."""
    log = StatementLog()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        log.statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A keyhouse instance of its own, started (background tasks running), and a client for it:
    several of them on one database make a deployment of several instances in one process."""
    runtime = Runtime.create(settings)
    app = create_app(runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://k.test") as client:
            yield runtime, client


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float) -> bool:
    """Whether ``check`` holds at some point within ``within`` seconds (polled)."""
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
