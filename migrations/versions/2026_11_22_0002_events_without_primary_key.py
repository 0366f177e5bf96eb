"""events without a primary key: event_keys already makes event_id unique

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_constraint("pk_events", "events", type_="primary")


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_primary_key("pk_events", "events", ["event_id", "occurred_at"])
