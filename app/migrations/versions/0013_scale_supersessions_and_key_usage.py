"""An organization of a million keys, the rest: ``key_supersessions`` holds a single-active-key
supersession whose keys are not all marked yet (verification treats them as marked meanwhile;
nothing to carry over: before this revision every supersession was marked at once), and
``key_usage`` each key's uses per bucket whatever the operation and outcome (what ``byKey``
reads), filled from ``usage_buckets``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.db import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_USAGE_KEY = ("organization_id", "granularity", "bucket_start", "api_key_id")


def upgrade() -> None:
    op.create_table(
        "key_supersessions",
        sa.Column("replacement_key_id", sa.String(32), nullable=False),
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("replaced_before", UTCDateTime(), nullable=False),
        sa.Column("effective_at", UTCDateTime(), nullable=False),
        sa.Column("kept_key_id", sa.String(32), nullable=True),
        sa.Column("actor_key_id", sa.String(32), nullable=True),
        sa.Column("actor_hint", sa.String(40), nullable=True),
        sa.Column("done_created_at", UTCDateTime(), nullable=True),
        sa.Column("done_key_id", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("replacement_key_id"),
    )
    op.create_index(
        "ix_key_supersessions_org", "key_supersessions", ["organization_id", "replaced_before"]
    )

    op.create_table(
        "key_usage",
        sa.Column("organization_id", sa.String(32), nullable=False),
        sa.Column("granularity", sa.String(6), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("valid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*KEY_USAGE_KEY),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO key_usage (organization_id, granularity, bucket_start, api_key_id,"
        " requests, valid)"
        " SELECT organization_id, granularity, bucket_start, api_key_id, SUM(count),"
        " SUM(CASE WHEN outcome = 'VALID' THEN count ELSE 0 END)"
        " FROM usage_buckets GROUP BY organization_id, granularity, bucket_start, api_key_id"
    )


def downgrade() -> None:
    op.drop_table("key_usage")
    op.drop_index("ix_key_supersessions_org", table_name="key_supersessions")
    op.drop_table("key_supersessions")
