"""The operator's tables: the platform that runs keyhouse is a caller too, with keys of its own,
a log of what it did, and the one-time links that sign a person into an organization's
dashboard."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth.principal import Operator
from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class OperatorKey(SQLModel, table=True):
    """A key of the platform's backend. Stored as the SHA-256 of its secret, like every key;
    never deleted, so the operator audit log can always name it."""

    __tablename__ = "operator_keys"
    __table_args__ = (Index("ix_operator_keys_created", "created_at", "id"),)

    id: str = Field(default_factory=lambda: new_id("opk"), primary_key=True, max_length=32)
    name: str = Field(max_length=128)
    key_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    def principal(self) -> Operator:
        return Operator(key_id=self.id, key_hint=self.hint)


class OperatorAction(StrEnum):
    OPERATOR_KEY_CREATED = "OPERATOR_KEY_CREATED"
    OPERATOR_KEY_REVOKED = "OPERATOR_KEY_REVOKED"
    ORGANIZATION_CREATED = "ORGANIZATION_CREATED"
    ORGANIZATION_SUSPENDED = "ORGANIZATION_SUSPENDED"
    ORGANIZATION_RESUMED = "ORGANIZATION_RESUMED"
    DASHBOARD_LINK_CREATED = "DASHBOARD_LINK_CREATED"
    DASHBOARD_LINK_USED = "DASHBOARD_LINK_USED"


class OperatorAuditEvent(SQLModel, table=True):
    """What an operator did, and when. Never holds a secret."""

    __tablename__ = "operator_audit_events"
    __table_args__ = (
        Index("ix_operator_audit_time", "occurred_at", "id"),
        Index("ix_operator_audit_org_time", "organization_id", "occurred_at", "id"),
    )

    id: str = Field(default_factory=lambda: new_id("oev"), primary_key=True, max_length=32)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    action: str = Field(max_length=32)
    # The acting operator key; None for the CLI on the server.
    actor_key_id: str | None = Field(default=None, max_length=32)
    actor_hint: str | None = Field(default=None, max_length=40)
    # The organization the action concerns, if any.
    organization_id: str | None = Field(default=None, max_length=32)
    details: str = Field(default="{}", max_length=4000)


def record_operator_event(
    session: AsyncSession,
    operator: Operator | None,
    action: OperatorAction,
    *,
    organization_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> OperatorAuditEvent:
    """Add the event to the action's transaction: it is written if and only if the action is."""
    event = OperatorAuditEvent(
        action=action.value,
        actor_key_id=None if operator is None else operator.key_id,
        actor_hint=None if operator is None else operator.key_hint,
        organization_id=organization_id,
        details=json.dumps(details or {}, sort_keys=True, default=_jsonable),
    )
    session.add(event)
    return event


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class DashboardLink(SQLModel, table=True):
    """A one-time link that signs a person into an organization's dashboard. Only the SHA-256
    of its token is kept; it works once (``used_at``) and only until ``expires_at``."""

    __tablename__ = "dashboard_links"

    id: str = Field(default_factory=lambda: new_id("dln"), primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", max_length=32, index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    operator_key_id: str | None = Field(default=None, max_length=32)
    operator_key_hint: str | None = Field(default=None, max_length=40)


class DashboardCredential(SQLModel, table=True):
    """What a used link yields: a short-lived credential for ``/graphql`` with the organization
    admin's scopes. It is not a key: it never appears among the organization's keys."""

    __tablename__ = "dashboard_credentials"

    id: str = Field(default_factory=lambda: new_id("dcr"), primary_key=True, max_length=32)
    organization_id: str = Field(foreign_key="organizations.id", max_length=32, index=True)
    credential_hash: str = Field(max_length=64, unique=True)
    hint: str = Field(max_length=40)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    link_id: str = Field(max_length=32)
    operator_key_id: str | None = Field(default=None, max_length=32)
    operator_key_hint: str | None = Field(default=None, max_length=40)
