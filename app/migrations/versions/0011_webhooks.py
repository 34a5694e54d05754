"""Webhooks: the outbox of events, endpoints and their deliveries; leak reports (a key's
leaked_at, an organization's leaked_key_action); an index for the expiry notices' walk.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPIRING = "revoked_at IS NULL AND expires_at IS NOT NULL"
PENDING_FAN_OUT = "fanned_out_at IS NULL"
PENDING = "status = 'PENDING'"
SEQUENCE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(
            sa.Column("leaked_key_action", sa.String(16), nullable=False, server_default="REVOKE")
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("leaked_at", UTCDateTime(), nullable=True))
    op.create_index(
        "ix_api_keys_expires",
        "api_keys",
        ["expires_at"],
        sqlite_where=sa.text(EXPIRING),
        postgresql_where=sa.text(EXPIRING),
    )
    op.create_table(
        "outbox_events",
        sa.Column("sequence", SEQUENCE, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("data", sa.String(8000), nullable=False),
        sa.Column("once_key", sa.String(80), nullable=True, unique=True),
        sa.Column("fanned_out_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["sequence"],
        sqlite_where=sa.text(PENDING_FAN_OUT),
        postgresql_where=sa.text(PENDING_FAN_OUT),
    )
    op.create_index("ix_outbox_events_occurred", "outbox_events", ["occurred_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "organization_id", sa.String(32), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("events_text", sa.String(1000), nullable=False),
        sa.Column("sealed_secret", sa.String(200), nullable=False),
        sa.Column("previous_sealed_secret", sa.String(200), nullable=True),
        sa.Column("previous_secret_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_webhook_endpoints_org", "webhook_endpoints", ["organization_id", "created_at", "id"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "endpoint_id", sa.String(32), sa.ForeignKey("webhook_endpoints.id"), nullable=False
        ),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("event_sequence", SEQUENCE, nullable=True),
        sa.Column("subject_id", sa.String(32), nullable=False),
        sa.Column("payload", sa.String(8000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("leased_until", UTCDateTime(), nullable=True),
        sa.Column("last_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_excerpt", sa.String(300), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "created_at", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.create_index(
        "ix_webhook_deliveries_order",
        "webhook_deliveries",
        ["endpoint_id", "subject_id", "event_sequence"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("outbox_events")
    op.drop_index("ix_api_keys_expires", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("leaked_at")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("leaked_key_action")
