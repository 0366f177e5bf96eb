"""A theme's coherence: whether its leading words are written together, and a theme about no
one subject kept unnamed and out of the features

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("themes", sa.Column("coherence", sa.Double(), nullable=True))
    op.add_column(
        "themes",
        sa.Column("coherent", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_column("themes", "coherent")
    op.drop_column("themes", "coherence")
