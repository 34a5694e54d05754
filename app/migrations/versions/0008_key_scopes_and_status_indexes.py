"""An organization of a million keys: a key's scopes get a row each in ``api_key_scopes`` (the
scope filter walks an index instead of matching text against every key), carried over from
``scopes_text``; partial indexes serve the status filters and counts (revoked, expiring,
superseded keys); the audit log gets indexes for its filters by key and by action.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVOKED = "revoked_at IS NOT NULL"
EXPIRING = "revoked_at IS NULL AND expires_at IS NOT NULL"
SUPERSEDING = "revoked_at IS NULL AND superseded_at IS NOT NULL"

# One statement, whatever the number of keys: scopes_text is split by the database itself.
_CARRY_OVER = {
    "postgresql": """
        INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)
        SELECT DISTINCT id, scope, organization_id, created_at
        FROM api_keys, unnest(string_to_array(scopes_text, ' ')) AS scope
        WHERE scope <> ''
    """,
    "sqlite": """
        WITH RECURSIVE split(id, organization_id, created_at, scope, rest) AS (
            SELECT id, organization_id, created_at, '', scopes_text || ' ' FROM api_keys
            UNION ALL
            SELECT id, organization_id, created_at, substr(rest, 1, instr(rest, ' ') - 1),
                   substr(rest, instr(rest, ' ') + 1)
            FROM split WHERE rest <> ''
        )
        INSERT INTO api_key_scopes (api_key_id, scope, organization_id, created_at)
        SELECT DISTINCT id, scope, organization_id, created_at FROM split WHERE scope <> ''
    """,
}


def _partial_index(name: str, columns: list[str], condition: str) -> None:
    op.create_index(
        name,
        "api_keys",
        columns,
        sqlite_where=sa.text(condition),
        postgresql_where=sa.text(condition),
    )


def upgrade() -> None:
    op.create_table(
        "api_key_scopes",
        sa.Column("api_key_id", sa.String(32), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "scope"),
    )
    op.execute(_CARRY_OVER[op.get_bind().dialect.name])
    op.create_index(
        "ix_api_key_scopes_listing",
        "api_key_scopes",
        ["organization_id", "scope", "created_at", "api_key_id"],
    )
    _partial_index("ix_api_keys_org_revoked", ["organization_id", "created_at", "id"], REVOKED)
    _partial_index("ix_api_keys_org_expires", ["organization_id", "expires_at"], EXPIRING)
    _partial_index("ix_api_keys_org_superseded", ["organization_id", "superseded_at"], SUPERSEDING)
    op.create_index(
        "ix_audit_org_key_time",
        "audit_events",
        ["organization_id", "api_key_id", "occurred_at", "id"],
    )
    op.create_index(
        "ix_audit_org_action_time",
        "audit_events",
        ["organization_id", "action", "occurred_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_org_action_time", table_name="audit_events")
    op.drop_index("ix_audit_org_key_time", table_name="audit_events")
    op.drop_index("ix_api_keys_org_superseded", table_name="api_keys")
    op.drop_index("ix_api_keys_org_expires", table_name="api_keys")
    op.drop_index("ix_api_keys_org_revoked", table_name="api_keys")
    op.drop_index("ix_api_key_scopes_listing", table_name="api_key_scopes")
    op.drop_table("api_key_scopes")
