"""Uplift: each target's learner as last fitted on the routing holdouts, and every live
account's expected uplift from it

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "uplift_fits",
        sa.Column("fit_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("fitted_at", TS, server_default=sa.text("now()"), nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("horizon_days", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("delivered_outcomes", sa.Integer(), nullable=False),
        sa.Column("delivered_pending", sa.Integer(), nullable=False),
        sa.Column("held_out", sa.Integer(), nullable=False),
        sa.Column("held_out_outcomes", sa.Integer(), nullable=False),
        sa.Column("held_out_pending", sa.Integer(), nullable=False),
        sa.Column("needed_per_arm", sa.Integer(), nullable=True),
        sa.Column("evaluation", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("fit_id", name=op.f("pk_uplift_fits")),
    )
    op.create_index(op.f("ix_uplift_fits_target"), "uplift_fits", ["target"])
    op.create_table(
        "uplift_scores",
        sa.Column("fit_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("uplift", sa.Double(), nullable=False),
        sa.Column("benefit", sa.Double(), nullable=False),
        sa.Column("untreated", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["fit_id"],
            ["uplift_fits.fit_id"],
            name=op.f("fk_uplift_scores_fit_id_uplift_fits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("fit_id", "account_id", name=op.f("pk_uplift_scores")),
    )
    op.create_index(
        "ix_uplift_scores_benefit", "uplift_scores", ["fit_id", "benefit", "account_id"]
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("uplift_scores")
    op.drop_table("uplift_fits")
