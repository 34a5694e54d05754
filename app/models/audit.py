"""The audit log's table, and the one way a change adds its event to it.

Every feature that changes keys or policies records its event here, in the transaction of the
change; the audit feature (app/audit) reads the log. A change that webhooks announce also gets
its outbox event here (app/models/events.py), in the same transaction: one call, both rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Index,
    Select,
    String,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import JSON as JSON_TYPE
from sqlalchemy.orm.util import identity_key
from sqlmodel import Field, SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Caller
from app.kit.db import UTCDateTime, after_commit, execute_core
from app.kit.ids import new_id
from app.kit.timeutil import utcnow
from app.models.events import EventType, OutboxEvent
from app.models.keys import ApiKey


class AuditAction(StrEnum):
    KEY_CREATED = "KEY_CREATED"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_ROTATED = "KEY_ROTATED"
    KEY_SUPERSEDED = "KEY_SUPERSEDED"
    # details: {"name", "hint", "changes": {field: {"old", "new"}}} (never a secret).
    KEY_UPDATED = "KEY_UPDATED"
    POLICY_UPDATED = "POLICY_UPDATED"
    KEY_LEAKED = "KEY_LEAKED"
    WEBHOOK_ENDPOINT_CREATED = "WEBHOOK_ENDPOINT_CREATED"
    WEBHOOK_ENDPOINT_UPDATED = "WEBHOOK_ENDPOINT_UPDATED"
    WEBHOOK_ENDPOINT_DELETED = "WEBHOOK_ENDPOINT_DELETED"
    WEBHOOK_SECRET_ROTATED = "WEBHOOK_SECRET_ROTATED"  # noqa: S105 - an action's name
    WEBHOOK_ENDPOINT_DISABLED = "WEBHOOK_ENDPOINT_DISABLED"
    # The platform's operator, about the organization (the actor is its operator key).
    ORGANIZATION_SUSPENDED = "ORGANIZATION_SUSPENDED"
    ORGANIZATION_RESUMED = "ORGANIZATION_RESUMED"
    DASHBOARD_SIGNED_IN = "DASHBOARD_SIGNED_IN"


# The audit actions webhooks announce, by name: an action added later under one of these names
# (KEY_UPDATED) is announced as soon as it exists.
WEBHOOK_EVENTS: dict[str, EventType] = {
    "KEY_CREATED": EventType.KEY_CREATED,
    "KEY_UPDATED": EventType.KEY_UPDATED,
    "KEY_REVOKED": EventType.KEY_REVOKED,
    "KEY_ROTATED": EventType.KEY_ROTATED,
    "KEY_SUPERSEDED": EventType.KEY_SUPERSEDED,
    "KEY_LEAKED": EventType.KEY_LEAKED,
    "POLICY_UPDATED": EventType.POLICY_UPDATED,
}


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
    announced = WEBHOOK_EVENTS.get(action.value)
    if announced is not None:
        session.add(_outbox_event(session, event, announced, details or {}))
        wake_delivery_after_commit(session)
    return event


# The session's info holds, under this name, what to call once an outbox event is committed
# (the running instance's delivery worker: app/runtime.py), so that it is delivered at once
# rather than at the worker's next look.
OUTBOX_WRITTEN = "outbox_written"


def wake_delivery_after_commit(session: AsyncSession) -> None:
    wake = session.info.get(OUTBOX_WRITTEN)
    if wake is not None and wake not in session.info.get("after_commit", []):
        after_commit(session, wake)


def _outbox_event(
    session: AsyncSession, event: AuditEvent, announced: EventType, details: dict[str, Any]
) -> OutboxEvent:
    """The webhook event of an audit event: the key's public fields as the change left them
    (the key is in the session: every change loads or adds it), and what the change was."""
    key = None if event.api_key_id is None else _in_session(session, event.api_key_id)
    data: dict[str, Any] = {"details": details}
    if event.api_key_id is not None:
        data["key"] = key.public_fields(event.occurred_at) if key else {"id": event.api_key_id}
    return OutboxEvent(
        organization_id=event.organization_id,
        type=announced.value,
        subject_id=event.api_key_id or event.organization_id,
        occurred_at=event.occurred_at,
        data=json.dumps(data, sort_keys=True, separators=(",", ":"), default=_jsonable),
    )


def _in_session(session: AsyncSession, key_id: str) -> ApiKey | None:
    """The key, if the session holds it (loaded or just added): no statement."""
    loaded = session.sync_session.identity_map.get(identity_key(ApiKey, key_id))
    if isinstance(loaded, ApiKey):
        return loaded
    return next((o for o in session.new if isinstance(o, ApiKey) and o.id == key_id), None)


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
    takes_effect_at: datetime | None = None,
) -> None:
    """The same event about each key ``api_key_ids`` selects, written by one statement, however
    many keys it selects: a change to every key of an organization stays one round trip (and
    its outbox events one more). Their webhook events are announced from ``takes_effect_at``
    (a superseded key's, when it stops working)."""
    dialect = session.get_bind().dialect.name
    now = utcnow()
    ids = api_key_ids.subquery()
    rows = select(
        literal_column(_DATABASE_EVENT_ID[dialect]),
        literal(caller.organization_id),
        literal(now, UTCDateTime()),
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
    announced = WEBHOOK_EVENTS.get(action.value)
    if announced is not None:
        await _outbox_events(
            session, caller, announced, api_key_ids, details, takes_effect_at or now
        )
        wake_delivery_after_commit(session)


# The JSON of a batched event's data, made by the database: the key's id, name and hint, and
# the change's details.
def _json_object(dialect: str, *pairs: Any) -> Any:
    return (func.json_build_object if dialect == "postgresql" else func.json_object)(*pairs)


def _json_value(dialect: str, text: str) -> Any:
    return cast(literal(text), JSON_TYPE) if dialect == "postgresql" else func.json(literal(text))


async def _outbox_events(
    session: AsyncSession,
    caller: Caller,
    announced: EventType,
    api_key_ids: Select[Any],
    details: dict[str, Any],
    occurred_at: datetime,
) -> None:
    dialect = session.get_bind().dialect.name
    ids = api_key_ids.subquery()
    key_id, name, hint = col(ApiKey.id), col(ApiKey.name), col(ApiKey.hint)
    key = _json_object(dialect, "hint", hint, "id", key_id, "name", name)
    details_json = json.dumps(details, sort_keys=True, default=_jsonable)
    data = _json_object(dialect, "details", _json_value(dialect, details_json), "key", key)
    values: list[Any] = [
        literal_column(_DATABASE_EVENT_ID[dialect]),
        literal(caller.organization_id),
        literal(announced.value),
        key_id,
        literal(occurred_at, UTCDateTime()),
        cast(data, String()),
    ]
    rows = select(*values).select_from(ids.join(ApiKey, key_id == ids.c[0]))
    columns = ["id", "organization_id", "type", "subject_id", "occurred_at", "data"]
    await execute_core(session, insert(OutboxEvent).from_select(columns, rows))


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
