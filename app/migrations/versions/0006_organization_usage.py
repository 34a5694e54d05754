"""An organization's usage per bucket and outcome, for charts without a key or operation filter.

Filled from usage_buckets, so that a database upgraded with usage in it answers the same.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organization_usage",
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("granularity", sa.String(6), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "granularity", "bucket_start", "outcome"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO organization_usage"
        " (organization_id, granularity, bucket_start, outcome, count)"
        " SELECT organization_id, granularity, bucket_start, outcome, SUM(count)"
        " FROM usage_buckets GROUP BY organization_id, granularity, bucket_start, outcome"
    )


def downgrade() -> None:
    op.drop_table("organization_usage")
