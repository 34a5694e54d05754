"""The expiry index also holds when a key was superseded: ``expiringWithinDays`` counts the keys
still in play that expire by its horizon, and with ``superseded_at`` in the index that count reads
index entries only, instead of visiting each expiring key's row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPIRING = "revoked_at IS NULL AND expires_at IS NOT NULL"
INDEX = "ix_api_keys_org_expires"


def _expiry_index(columns: list[str]) -> None:
    op.drop_index(INDEX, table_name="api_keys")
    op.create_index(
        INDEX,
        "api_keys",
        columns,
        sqlite_where=sa.text(EXPIRING),
        postgresql_where=sa.text(EXPIRING),
    )


def upgrade() -> None:
    _expiry_index(["organization_id", "expires_at", "superseded_at"])


def downgrade() -> None:
    _expiry_index(["organization_id", "expires_at"])
