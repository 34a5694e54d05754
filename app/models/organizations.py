from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow

SUSPENDED_CONDITION = "suspended_at IS NOT NULL"


class LeakedKeyAction(StrEnum):
    """What happens to a key reported found in public."""

    REVOKE = "REVOKE"  # revoked at once, everywhere
    NOTIFY = "NOTIFY"  # only flagged: the key.leaked event and the audit log tell the owner


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"
    __table_args__ = (
        # The operator's list of organizations, newest first, and its suspended ones.
        Index("ix_organizations_created", "created_at", "id"),
        Index(
            "ix_organizations_suspended",
            "created_at",
            "id",
            sqlite_where=text(SUSPENDED_CONDITION),
            postgresql_where=text(SUSPENDED_CONDITION),
        ),
        Index("uq_organizations_external_id", "external_id", unique=True),
    )

    id: str = Field(default_factory=lambda: new_id("org"), primary_key=True, max_length=32)
    name: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    # Key policy. single_active_key: creating a key supersedes the organization's other
    # active keys (but the caller's own), after supersede_grace_hours.
    single_active_key: bool = Field(default=False)
    supersede_grace_hours: int = Field(default=0)
    # An upper bound on key lifetime, and whether every key must expire at all.
    max_expires_in_days: int | None = Field(default=None)
    require_expiry: bool = Field(default=False)
    # What a leak report does to the organization's key.
    leaked_key_action: str = Field(default=LeakedKeyAction.REVOKE.value, max_length=16)

    # The platform's own id for its customer (createOrganization): unique per deployment, so
    # that a signup retried with the same id finds the organization instead of making another.
    external_id: str | None = Field(default=None, max_length=128)
    # While suspended, every key of the organization is refused (ORGANIZATION_SUSPENDED).
    suspended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    suspension_reason: str | None = Field(default=None, max_length=500)
