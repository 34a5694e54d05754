"""The operator plane: operator keys, the operator audit log, dashboard sign-in links and the
credentials they yield; organizations gain the platform's external id and a suspension; usage
outcomes get room for ORGANIZATION_SUSPENDED (22 characters, over the old 20).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SUSPENDED = "suspended_at IS NOT NULL"
# Both usage tables are clustered by their primary key on SQLite (WITHOUT ROWID): a rebuild
# keeps that.
USAGE_TABLES = ("usage_buckets", "organization_usage")


def _outcome_length(length: int) -> None:
    for table in USAGE_TABLES:
        with op.batch_alter_table(table, table_kwargs={"sqlite_with_rowid": False}) as batch:
            batch.alter_column(
                "outcome",
                existing_type=sa.String(),
                type_=sa.String(length),
                existing_nullable=False,
            )


def upgrade() -> None:
    # Nullable columns and indexes: added in place on both databases (a rebuild of the table
    # would have to move every key's foreign key with it).
    op.add_column("organizations", sa.Column("external_id", sa.String(128), nullable=True))
    op.add_column("organizations", sa.Column("suspended_at", UTCDateTime(), nullable=True))
    op.add_column("organizations", sa.Column("suspension_reason", sa.String(500), nullable=True))
    op.create_index("uq_organizations_external_id", "organizations", ["external_id"], unique=True)
    op.create_index("ix_organizations_created", "organizations", ["created_at", "id"])
    op.create_index(
        "ix_organizations_suspended",
        "organizations",
        ["created_at", "id"],
        sqlite_where=sa.text(SUSPENDED),
        postgresql_where=sa.text(SUSPENDED),
    )
    op.create_table(
        "operator_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_operator_keys_created", "operator_keys", ["created_at", "id"])
    op.create_table(
        "operator_audit_events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor_key_id", sa.String(32), nullable=True),
        sa.Column("actor_hint", sa.String(40), nullable=True),
        sa.Column("organization_id", sa.String(32), nullable=True),
        sa.Column("details", sa.String(4000), nullable=False),
    )
    op.create_index("ix_operator_audit_time", "operator_audit_events", ["occurred_at", "id"])
    op.create_index(
        "ix_operator_audit_org_time",
        "operator_audit_events",
        ["organization_id", "occurred_at", "id"],
    )
    op.create_table(
        "dashboard_links",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "organization_id", sa.String(32), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("operator_key_id", sa.String(32), nullable=True),
        sa.Column("operator_key_hint", sa.String(40), nullable=True),
    )
    op.create_index("ix_dashboard_links_organization_id", "dashboard_links", ["organization_id"])
    op.create_table(
        "dashboard_credentials",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "organization_id", sa.String(32), sa.ForeignKey("organizations.id"), nullable=False
        ),
        sa.Column("credential_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("link_id", sa.String(32), nullable=False),
        sa.Column("operator_key_id", sa.String(32), nullable=True),
        sa.Column("operator_key_hint", sa.String(40), nullable=True),
    )
    op.create_index(
        "ix_dashboard_credentials_organization_id", "dashboard_credentials", ["organization_id"]
    )
    _outcome_length(32)


def downgrade() -> None:
    _outcome_length(20)
    op.drop_table("dashboard_credentials")
    op.drop_table("dashboard_links")
    op.drop_table("operator_audit_events")
    op.drop_table("operator_keys")
    op.drop_index("ix_organizations_suspended", table_name="organizations")
    op.drop_index("ix_organizations_created", table_name="organizations")
    op.drop_index("uq_organizations_external_id", table_name="organizations")
    for column in ("suspension_reason", "suspended_at", "external_id"):
        op.drop_column("organizations", column)
