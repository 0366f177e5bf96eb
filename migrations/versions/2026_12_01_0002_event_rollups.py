"""Event rollups: per account, event type and UTC month, how many events, their value, the first
and the last, kept by a statement trigger on events, so lifetime aggregates are read from a few
rows per type instead of every event an account ever sent

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "event_rollups",
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("valued", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Double(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "type", "month", name=op.f("pk_event_rollups")),
    )
    # One statement per insert into events (a batch, a COPY), not one per row: the inserted rows
    # (duplicates skipped by ON CONFLICT never reach the transition table) grouped by account,
    # type and month, in key order so concurrent batches lock rollup rows in the same order.
    op.execute(
        """
        CREATE FUNCTION roll_up_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO event_rollups AS r
                (account_id, type, month, events, valued, value_sum, first_at, last_at)
            SELECT account_id, type, (date_trunc('month', occurred_at AT TIME ZONE 'UTC'))::date,
                   count(*), count(value), coalesce(sum(value), 0), min(occurred_at),
                   max(occurred_at)
            FROM inserted
            GROUP BY 1, 2, 3
            ORDER BY 1, 2, 3
            ON CONFLICT (account_id, type, month) DO UPDATE SET
                events = r.events + excluded.events,
                valued = r.valued + excluded.valued,
                value_sum = r.value_sum + excluded.value_sum,
                first_at = least(r.first_at, excluded.first_at),
                last_at = greatest(r.last_at, excluded.last_at);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_rolled_up AFTER INSERT ON events REFERENCING NEW TABLE AS inserted "
        "FOR EACH STATEMENT EXECUTE FUNCTION roll_up_events()"
    )
    # Events already stored.
    op.execute(
        """
        INSERT INTO event_rollups
            (account_id, type, month, events, valued, value_sum, first_at, last_at)
        SELECT account_id, type, (date_trunc('month', occurred_at AT TIME ZONE 'UTC'))::date,
               count(*), count(value), coalesce(sum(value), 0), min(occurred_at), max(occurred_at)
        FROM events
        GROUP BY 1, 2, 3
        """
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("DROP TRIGGER events_rolled_up ON events")
    op.execute("DROP FUNCTION roll_up_events()")
    op.drop_table("event_rollups")
