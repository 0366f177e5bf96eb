"""A destination may require a consent category of the people an insight names; an API key may
be limited to some sources

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column(
        "destinations", sa.Column("consent_category", sa.String(length=64), nullable=True)
    )
    op.add_column("api_keys", sa.Column("sources", postgresql.ARRAY(sa.UUID()), nullable=True))


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_column("api_keys", "sources")
    op.drop_column("destinations", "consent_category")
