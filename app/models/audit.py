from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class AuditAction(StrEnum):
    KEY_CREATED = "KEY_CREATED"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_ROTATED = "KEY_ROTATED"
    KEY_SUPERSEDED = "KEY_SUPERSEDED"
    POLICY_UPDATED = "POLICY_UPDATED"


class AuditEvent(SQLModel, table=True):
    """Who changed what about an organization's keys, and when. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_org_time", "organization_id", "occurred_at", "id"),)

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
