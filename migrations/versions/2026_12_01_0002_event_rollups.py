"""Event rollups: per account, event type and UTC month, how many events, their value, the first
and the last, so lifetime aggregates read a few rows per type instead of every event an account
ever sent; and which months are rolled up, with the count of events each held then

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
    op.create_index(op.f("ix_event_rollups_month"), "event_rollups", ["month"], unique=False)
    op.create_table(
        "event_rollup_months",
        sa.Column("partition", sa.String(length=63), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column(
            "rolled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_event_rollup_months")),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("event_rollup_months")
    op.drop_index(op.f("ix_event_rollups_month"), table_name="event_rollups")
    op.drop_table("event_rollups")
