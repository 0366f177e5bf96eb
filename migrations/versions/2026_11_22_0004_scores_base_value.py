"""scores keep base_value and other_contribution, so a stored score reads back whole

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("scores", sa.Column("base_value", sa.Float(), nullable=True))
    op.add_column("scores", sa.Column("other_contribution", sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_column("scores", "other_contribution")
    op.drop_column("scores", "base_value")
