"""The outbox: events for webhooks, written in the transaction of the change that caused them.

A change commits its row, its audit event and its outbox event together, or none of them; the
delivery worker (app/webhooks/worker.py) reads the outbox after commit and fans each event out
to the endpoints subscribed to it. Writing an event is one row, whoever listens: the hot write
path never looks at endpoints.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Integer, text
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class EventType(StrEnum):
    KEY_CREATED = "key.created"
    KEY_UPDATED = "key.updated"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"
    KEY_SUPERSEDED = "key.superseded"
    KEY_EXPIRING = "key.expiring"
    KEY_EXPIRED = "key.expired"
    KEY_LEAKED = "key.leaked"
    POLICY_UPDATED = "policy.updated"


PENDING_FAN_OUT = "fanned_out_at IS NULL"


class OutboxEvent(SQLModel, table=True):
    """One event, as every subscribed endpoint receives it. Never holds a secret or a hash."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        # What the worker reads: events not yet fanned out, oldest first.
        Index(
            "ix_outbox_events_pending",
            "sequence",
            sqlite_where=text(PENDING_FAN_OUT),
            postgresql_where=text(PENDING_FAN_OUT),
        ),
        Index("ix_outbox_events_occurred", "occurred_at"),
        # What a delivery's claim asks: is an earlier event about its subject not fanned out?
        Index(
            "ix_outbox_events_pending_subject",
            "subject_id",
            "sequence",
            sqlite_where=text(PENDING_FAN_OUT),
            postgresql_where=text(PENDING_FAN_OUT),
        ),
    )

    # Insertion order: deliveries to an endpoint about one key go out in this order.
    sequence: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    # The event's id as receivers see it (the webhook-id header): the same on every retry.
    id: str = Field(default_factory=lambda: new_id("evt"), max_length=32, unique=True)
    organization_id: str = Field(max_length=32)
    type: str = Field(max_length=40)
    # Whose events are ordered together: the key's id, or the organization's for a policy.
    subject_id: str = Field(max_length=32)
    # When it happens: not fanned out before (a superseded key's event waits until the key
    # stops working).
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The event's ``data`` as JSON text; the worker wraps it in the envelope (``event_body``).
    data: str = Field(max_length=8000)
    # Events that must happen once per key and occasion (an expiry notice, a leak) carry a key
    # naming the occasion; the unique index makes a second one impossible.
    once_key: str | None = Field(default=None, max_length=80, unique=True)
    fanned_out_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


def event_body(event: OutboxEvent) -> str:
    """An event as receivers read it: ``{id, type, timestamp, organizationId, data}``."""
    envelope = {
        "id": event.id,
        "type": event.type,
        "timestamp": event.occurred_at.isoformat(),
        "organizationId": event.organization_id,
    }
    # The data is already JSON: spliced in, not parsed and encoded again.
    return event_data(envelope)[:-1] + ',"data":' + event.data + "}"


def event_data(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_jsonable)


def new_event(
    organization_id: str,
    event_type: EventType,
    subject_id: str,
    data: dict[str, Any],
    *,
    occurred_at: datetime | None = None,
    once_key: str | None = None,
) -> OutboxEvent:
    return OutboxEvent(
        organization_id=organization_id,
        type=event_type.value,
        subject_id=subject_id,
        occurred_at=occurred_at or utcnow(),
        data=event_data(data),
        once_key=once_key,
    )


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
