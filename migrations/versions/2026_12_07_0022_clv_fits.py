"""The purchase-log lifetime-value models the worker fits (BG/NBD and Gamma-Gamma)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "clv_fits",
        sa.Column("fit_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("fitted_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("bgnbd", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("gamma_gamma", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("draws", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("fit_id", name=op.f("pk_clv_fits")),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("clv_fits")
