"""Rollups that serve the long windows: each month's days with an event (bit d-1 for day d, for
the cadence), so that features read every month before the last three from the rollups (180 and
365 days, first and last instants, lifetime) rather than event by event; the rollups made before
are dropped, to be rolled again with their days. Survey answers and ticket events indexed by
account and time, which only they pay for: features find an account's latest answers and its
tickets of the year without reading its other events

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SURVEYS = "type IN ('nps_answered', 'csat_answered', 'ces_answered')"
TICKETS = "type IN ('ticket_opened', 'ticket_closed')"


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    # Rollups are derived: emptied, every month is rolled again (with its days) when needed.
    op.execute("DELETE FROM event_rollup_months")
    op.execute("DELETE FROM event_rollups")
    op.add_column(
        "event_rollups",
        sa.Column("days", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index(
        "ix_events_account_surveys",
        "events",
        ["account_id", "occurred_at"],
        postgresql_where=sa.text(SURVEYS),
    )
    op.create_index(
        "ix_events_account_tickets",
        "events",
        ["account_id", "occurred_at"],
        postgresql_where=sa.text(TICKETS),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index("ix_events_account_tickets", table_name="events")
    op.drop_index("ix_events_account_surveys", table_name="events")
    op.drop_column("event_rollups", "days")
