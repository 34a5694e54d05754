"""Usage buckets (minute, hour, day).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_buckets",
        sa.Column("granularity", sa.String(6), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("operation", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "granularity", "bucket_start", "api_key_id", "operation", "outcome"
        ),
    )
    op.create_index(
        "ix_usage_org_range", "usage_buckets", ["organization_id", "granularity", "bucket_start"]
    )
    op.create_index(
        "ix_usage_key_range", "usage_buckets", ["api_key_id", "granularity", "bucket_start"]
    )


def downgrade() -> None:
    op.drop_table("usage_buckets")
