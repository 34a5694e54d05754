"""The audit log's table, and the one way a change adds its event to it.

Every feature that changes keys or policies records its event here, in the transaction of the
change; the audit feature (app/audit) reads the log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index, Select, String, insert, literal, literal_column, select
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.kit.db import UTCDateTime, execute_core
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class AuditAction(StrEnum):
    KEY_CREATED = "KEY_CREATED"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_ROTATED = "KEY_ROTATED"
    KEY_SUPERSEDED = "KEY_SUPERSEDED"
    POLICY_UPDATED = "POLICY_UPDATED"
    # The platform's operator, about the organization (the actor is its operator key).
    ORGANIZATION_SUSPENDED = "ORGANIZATION_SUSPENDED"
    ORGANIZATION_RESUMED = "ORGANIZATION_RESUMED"
    DASHBOARD_SIGNED_IN = "DASHBOARD_SIGNED_IN"


class AuditEvent(SQLModel, table=True):
    """Who changed what about an organization's keys, and when. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_org_time", "organization_id", "occurred_at", "id"),
        # The log's filters, each in the log's order: by key, by action.
        Index("ix_audit_org_key_time", "organization_id", "api_key_id", "occurred_at", "id"),
        Index("ix_audit_org_action_time", "organization_id", "action", "occurred_at", "id"),
    )

    id: str = Field(default_factory=lambda: new_id("evt"), primary_key=True, max_length=32)
    organization_id: str = Field(max_length=32)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    action: str = Field(max_length=32)
    # The acting key; None when the operator acted through the CLI.
    actor_key_id: str | None = Field(default=None, max_length=32)
    actor_hint: str | None = Field(default=None, max_length=40)
    api_key_id: str | None = Field(default=None, max_length=32)
    # What changed, as JSON text.
    details: str = Field(default="{}", max_length=4000)


def record_event(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    *,
    api_key_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an event to the caller's transaction: it is written if and only if the change is."""
    event = AuditEvent(
        organization_id=caller.organization_id,
        action=action.value,
        actor_key_id=caller.key_id,
        actor_hint=caller.key_hint,
        api_key_id=api_key_id,
        details=json.dumps(details or {}, sort_keys=True, default=_jsonable),
    )
    session.add(event)
    return event


# An event id made by the database, for events written many at a time: the id's prefix and 22
# random characters (hexadecimal digits, a subset of an id's base62).
_DATABASE_EVENT_ID = {
    "postgresql": "'evt_' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 22)",
    "sqlite": "'evt_' || lower(hex(randomblob(11)))",
}


async def record_events(
    session: AsyncSession,
    caller: Caller,
    action: AuditAction,
    api_key_ids: Select[Any],
    *,
    details: dict[str, Any],
) -> None:
    """The same event about each key ``api_key_ids`` selects, written by one statement, however
    many keys it selects: a change to every key of an organization stays one round trip."""
    dialect = session.get_bind().dialect.name
    ids = api_key_ids.subquery()
    rows = select(
        literal_column(_DATABASE_EVENT_ID[dialect]),
        literal(caller.organization_id),
        literal(utcnow(), UTCDateTime()),
        literal(action.value),
        literal(caller.key_id, String()),
        literal(caller.key_hint, String()),
        ids.c[0],
        literal(json.dumps(details, sort_keys=True, default=_jsonable)),
    )
    columns = [
        "id",
        "organization_id",
        "occurred_at",
        "action",
        "actor_key_id",
        "actor_hint",
        "api_key_id",
        "details",
    ]
    await execute_core(session, insert(AuditEvent).from_select(columns, rows))


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
