"""Usage buckets stored in organization order.

The primary key starts with the organization, the time range and the bucket's other dimensions
(organization, granularity, start, key, operation, outcome): every usage query is a range of it,
and on SQLite the table is stored WITHOUT ROWID, clustered by that key with ``count`` beside it,
so the queries read one B-tree and never visit rows elsewhere. A flush then updates two B-trees
per row (the table and the key index) instead of four (rowid table, primary key and two
indexes), which was most of its cost (benchmarks/usage.py). The separate organization index is
gone: the primary key is that index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "granularity, bucket_start, api_key_id, organization_id, operation, outcome, count"
OLD_KEY = ["granularity", "bucket_start", "api_key_id", "operation", "outcome"]
NEW_KEY = ["organization_id", "granularity", "bucket_start", "api_key_id", "operation", "outcome"]


def _rebuild(key: list[str], *, clustered: bool) -> None:
    """Copy the buckets into a table with primary key ``key`` and put it in place."""
    op.create_table(
        "usage_buckets_rebuilt",
        sa.Column("granularity", sa.String(6), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("operation", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="usage_buckets_rebuilt_pkey"),
        sqlite_with_rowid=not clustered,
    )
    op.execute(
        f"INSERT INTO usage_buckets_rebuilt ({COLUMNS}) SELECT {COLUMNS} FROM usage_buckets"  # noqa: S608 - constants
    )
    op.drop_table("usage_buckets")
    op.rename_table("usage_buckets_rebuilt", "usage_buckets")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE usage_buckets RENAME CONSTRAINT usage_buckets_rebuilt_pkey "
            "TO usage_buckets_pkey"
        )
    op.create_index(
        "ix_usage_key_range", "usage_buckets", ["api_key_id", "granularity", "bucket_start"]
    )


def upgrade() -> None:
    _rebuild(NEW_KEY, clustered=True)


def downgrade() -> None:
    _rebuild(OLD_KEY, clustered=False)
    op.create_index(
        "ix_usage_org_range", "usage_buckets", ["organization_id", "granularity", "bucket_start"]
    )
