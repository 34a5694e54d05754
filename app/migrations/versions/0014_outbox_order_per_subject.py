"""The outbox numbers an event only once its transaction holds its subject's row (PostgreSQL).

Events about one key are delivered in their ``sequence`` order. A transaction writes its outbox
row before it updates the key (the unit of work inserts before it updates), so on PostgreSQL
two transactions changing one key could draw their numbers in one order and take the key's row
lock, and commit, in the other: a receiver would then get the later change first whenever the
worker saw both at once. A trigger now takes the subject's row lock (the key's, or the
organization's for its policy) before it draws the number: the lock the change itself takes, so
two writers about one subject are numbered in the order they commit, and no new kind of wait
appears. SQLite runs one writing transaction at a time: numbers follow commits there already.

And an index for the question each claim of a delivery asks, "is an earlier event about this
subject not fanned out yet?": by subject, not a walk through every pending number below it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_FAN_OUT = "fanned_out_at IS NULL"
INDEX = "ix_outbox_events_pending_subject"
FUNCTION = "outbox_events_number_in_subject_order"
TRIGGER = "outbox_events_in_subject_order"

# FOR NO KEY UPDATE: the lock an UPDATE of the row takes, which inserts referring to the row
# (FOR KEY SHARE) do not wait for. A key created in the same transaction is not found yet: no
# other transaction can write about it before this one commits.
CREATE_FUNCTION = f"""
CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.subject_id = NEW.organization_id THEN
        PERFORM 1 FROM organizations WHERE id = NEW.subject_id FOR NO KEY UPDATE;
    ELSE
        PERFORM 1 FROM api_keys WHERE id = NEW.subject_id FOR NO KEY UPDATE;
    END IF;
    NEW.sequence := nextval(pg_get_serial_sequence('outbox_events', 'sequence'));
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_index(
        INDEX,
        "outbox_events",
        ["subject_id", "sequence"],
        sqlite_where=sa.text(PENDING_FAN_OUT),
        postgresql_where=sa.text(PENDING_FAN_OUT),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CREATE_FUNCTION)
    op.execute(
        f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON outbox_events"
        f" FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()"
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="outbox_events")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP TRIGGER {TRIGGER} ON outbox_events")
    op.execute(f"DROP FUNCTION {FUNCTION}()")
