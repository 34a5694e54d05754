"""Key policy, rotation/supersession and the audit log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "revoked_at IS NULL AND superseded_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(
            sa.Column("single_active_key", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("supersede_grace_hours", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("max_expires_in_days", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("require_expiry", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("superseded_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("superseded_by_key_id", sa.String(32), nullable=True))
    # A replaced key's name is free again (rotation reuses it).
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    op.create_index(
        "uq_api_keys_live_name",
        "api_keys",
        ["organization_id", "name"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_key_id", sa.String(32), nullable=True),
        sa.Column("actor_hint", sa.String(40), nullable=True),
        sa.Column("api_key_id", sa.String(32), nullable=True),
        sa.Column("details", sa.String(4000), nullable=False),
    )
    op.create_index("ix_audit_org_time", "audit_events", ["organization_id", "occurred_at", "id"])
    op.create_table(
        "idempotency_records",
        sa.Column("organization_id", sa.String(32), primary_key=True),
        sa.Column("key_digest", sa.String(64), primary_key=True),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("previous_api_key_id", sa.String(32), nullable=True),
        sa.Column("sealed_secret", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idempotency_records")
    op.drop_table("audit_events")
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    op.create_index(
        "uq_api_keys_live_name",
        "api_keys",
        ["organization_id", "name"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("superseded_by_key_id")
        batch.drop_column("superseded_at")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("require_expiry")
        batch.drop_column("max_expires_in_days")
        batch.drop_column("supersede_grace_hours")
        batch.drop_column("single_active_key")
