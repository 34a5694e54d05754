from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from app.kit.db import UTCDateTime
from app.kit.ids import new_id
from app.kit.timeutil import utcnow


class LeakedKeyAction(StrEnum):
    """What happens to a key reported found in public."""

    REVOKE = "REVOKE"  # revoked at once, everywhere
    NOTIFY = "NOTIFY"  # only flagged: the key.leaked event and the audit log tell the owner


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

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
