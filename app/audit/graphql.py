"""GraphQL for the audit log (needs ``read:api_keys``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from app.audit import service
from app.graphql.context import Info
from app.graphql.permissions import needs
from app.graphql.types import Connection
from app.keys import loaders
from app.keys.graphql import ApiKeyType
from app.keys.scopes import READ_API_KEYS
from app.kit.pagination import DEFAULT_PAGE_SIZE, Cursor, check_page_size
from app.models.audit import AuditAction, AuditEvent

# The domain enum itself is the GraphQL enum.
strawberry.enum(AuditAction, name="AuditAction")


@strawberry.type(description="Who acted: the key that made the request (null id: the CLI).")
class AuditActor:
    id: strawberry.ID | None
    hint: str | None


@strawberry.type(name="AuditEvent")
class AuditEventType:
    id: strawberry.ID
    action: AuditAction
    occurred_at: datetime
    actor: AuditActor
    details: JSON = strawberry.field(description="What changed. Never a secret.")
    api_key_id: strawberry.Private[str | None]

    @strawberry.field(description="The key the event is about, if any.")
    async def api_key(self, info: Info) -> ApiKeyType | None:
        if self.api_key_id is None:
            return None
        row = await info.context.loader(loaders.api_keys).load(self.api_key_id)
        return None if row is None else ApiKeyType.of(row, info.context)

    @classmethod
    def of(cls, row: AuditEvent) -> AuditEventType:
        return cls(
            id=strawberry.ID(row.id),
            action=AuditAction(row.action),
            occurred_at=row.occurred_at,
            actor=AuditActor(
                id=None if row.actor_key_id is None else strawberry.ID(row.actor_key_id),
                hint=row.actor_hint,
            ),
            details=json.loads(row.details),
            api_key_id=row.api_key_id,
        )


@strawberry.input
class AuditLogFilter:
    action: AuditAction | None = None
    api_key_id: strawberry.ID | None = None


@strawberry.type
class Query:
    @strawberry.field(
        extensions=needs(READ_API_KEYS),
        description="Key creations, revocations, rotations, supersessions and policy changes, "
        "newest first.",
    )
    async def audit_log(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        filter: Annotated[AuditLogFilter | None, strawberry.argument()] = None,
    ) -> Connection[AuditEventType]:
        check_page_size(first)
        cursor = None if after is None else Cursor.decode(after)
        audit_filter = service.AuditFilter(
            action=None if filter is None else filter.action,
            api_key_id=None
            if filter is None or filter.api_key_id is None
            else str(filter.api_key_id),
        )
        caller = info.context.caller
        async with info.context.db() as session:
            page = await service.list_events(
                session, caller, audit_filter, first=first, after=cursor
            )

        async def count() -> int:
            async with info.context.db() as session:
                return await service.count_events(session, caller, audit_filter)

        return Connection.of(
            page.events,
            AuditEventType.of,
            lambda row: Cursor(row.occurred_at, row.id),
            count=count,
            has_next_page=page.has_next_page,
            after=cursor,
        )
