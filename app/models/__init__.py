"""Every table of keyhouse, in one package below the features.

Features read and write each other's tables (a key's creation writes an audit event and reads its
organization's policy; usage writes a key's last use), so the tables live here, where every
feature may import them, rather than in a feature that the others would then depend on. Importing
the package makes ``SQLModel.metadata`` complete (Alembic, tests).
"""

from sqlmodel import SQLModel

from app.models.audit import AuditEvent
from app.models.events import OutboxEvent
from app.models.keys import ApiKey, ApiKeyScope, IdempotencyRecord, KeySupersession
from app.models.operators import DashboardCredential, DashboardLink, OperatorAuditEvent, OperatorKey
from app.models.organizations import Organization
from app.models.usage import KeyUsage, OrganizationUsage, UsageBucket
from app.models.webhooks import WebhookDelivery, WebhookEndpoint

metadata = SQLModel.metadata

__all__ = [
    "ApiKey",
    "ApiKeyScope",
    "AuditEvent",
    "DashboardCredential",
    "DashboardLink",
    "IdempotencyRecord",
    "KeySupersession",
    "KeyUsage",
    "OperatorAuditEvent",
    "OperatorKey",
    "Organization",
    "OrganizationUsage",
    "OutboxEvent",
    "UsageBucket",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
