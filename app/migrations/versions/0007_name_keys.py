"""Key names are unique under NFKC and case folding: ``api_keys.name_key`` holds the compared
form, and the unique index of live names moves to it. Idempotency records get an index on their
age, for the purge.

Live keys whose names already collide under the new comparison (``Admin`` beside ``admin``)
keep working and keep their names: each of them but the oldest gets a compared form made
distinct by its id, so the index can be built. Renaming or revoking one ends the exception.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.kit.boundary import name_key

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "revoked_at IS NULL AND superseded_at IS NULL"


def _backfill() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT id, organization_id, name, revoked_at IS NULL AND superseded_at IS NULL"
            " FROM api_keys ORDER BY created_at, id"
        )
    ).all()
    taken: set[tuple[str, str]] = set()
    for key_id, organization_id, name, live in rows:
        compared = name_key(name)
        if live and (organization_id, compared) in taken:
            compared = f"{compared}#{key_id}"
        elif live:
            taken.add((organization_id, compared))
        connection.execute(
            sa.text("UPDATE api_keys SET name_key = :compared WHERE id = :id"),
            {"compared": compared, "id": key_id},
        )


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("name_key", sa.String(600), nullable=True))
    _backfill()
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("name_key", existing_type=sa.String(600), nullable=False)
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    op.create_index(
        "uq_api_keys_live_name",
        "api_keys",
        ["organization_id", "name_key"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )
    op.create_index("ix_idempotency_records_created", "idempotency_records", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_records_created", table_name="idempotency_records")
    op.drop_index("uq_api_keys_live_name", table_name="api_keys")
    op.create_index(
        "uq_api_keys_live_name",
        "api_keys",
        ["organization_id", "name"],
        unique=True,
        sqlite_where=sa.text(LIVE),
        postgresql_where=sa.text(LIVE),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("name_key")
