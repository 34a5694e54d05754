"""Imports every table module so ``SQLModel.metadata`` is complete (Alembic, tests)."""

from sqlmodel import SQLModel

from app.audit.models import AuditEvent
from app.keys.models import ApiKey, IdempotencyRecord
from app.organizations.models import Organization
from app.usage.models import OrganizationUsage, UsageBucket

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "AuditEvent",
    "IdempotencyRecord",
    "Organization",
    "OrganizationUsage",
    "UsageBucket",
    "metadata",
]
