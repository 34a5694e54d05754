"""Key controls: a key can be paused (enabled), carry the provider's metadata, be tied to the
networks it may be used from, and hold credits with an optional refill.

Existing keys stay as they were: enabled, no metadata, usable from anywhere, unlimited.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN on both databases, not a batch: a batch may copy api_keys
    # into a new table and drop the old one, which api_key_scopes' foreign key forbids.
    columns: list[sa.Column[Any]] = [
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.Column("ip_allowlist", sa.Text(), nullable=True),
        sa.Column("credits_remaining", sa.Integer(), nullable=True),
        sa.Column("credits_refill_amount", sa.Integer(), nullable=True),
        sa.Column("credits_refill_interval", sa.String(length=16), nullable=True),
        sa.Column("credits_period", sa.String(length=16), nullable=True),
        sa.Column("credits_version", sa.Integer(), nullable=False, server_default=sa.text("0")),
    ]
    for column in columns:
        op.add_column("api_keys", column)


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN needs SQLite 3.35 or later.
    for column in (
        "credits_version",
        "credits_period",
        "credits_refill_interval",
        "credits_refill_amount",
        "credits_remaining",
        "ip_allowlist",
        "meta",
        "enabled",
    ):
        op.drop_column("api_keys", column)
