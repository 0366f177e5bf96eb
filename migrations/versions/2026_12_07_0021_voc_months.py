"""The voice of the customer's counts by month and segment, kept by the worker for the console

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "voc_answer_months",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("segment", sa.String(length=255), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("ignored", sa.BigInteger(), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.Column("low", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.Column("squares", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voc_answer_months")),
    )
    op.create_table(
        "voc_text_months",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("segment", sa.String(length=255), nullable=True),
        sa.Column("label", sa.String(length=16), nullable=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voc_text_months")),
    )
    op.create_table(
        "voc_refreshes",
        sa.Column("counted_at", TS, nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.PrimaryKeyConstraint("counted_at", name=op.f("pk_voc_refreshes")),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("voc_refreshes")
    op.drop_table("voc_text_months")
    op.drop_table("voc_answer_months")
