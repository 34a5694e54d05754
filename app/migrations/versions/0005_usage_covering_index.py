"""Usage queries answered from the organization index alone.

The organization's range index also holds every column a usage query reads (outcome, key,
operation, count), so totals, series and breakdowns never visit the table rows: on SQLite the
30-day HOUR question of benchmarks/usage.py was dominated by those row lookups.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RANGE = ["organization_id", "granularity", "bucket_start"]
COVERING = [*RANGE, "outcome", "api_key_id", "operation", "count"]


def upgrade() -> None:
    op.drop_index("ix_usage_org_range", table_name="usage_buckets")
    op.create_index("ix_usage_org_range", "usage_buckets", COVERING)


def downgrade() -> None:
    op.drop_index("ix_usage_org_range", table_name="usage_buckets")
    op.create_index("ix_usage_org_range", "usage_buckets", RANGE)
