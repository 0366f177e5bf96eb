"""closed loop: model lineage, stored comparisons between candidate and active models, and
scheduled jobs enqueued once per slot

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("models", sa.Column("replaced_model_id", sa.String(length=64), nullable=True))
    op.add_column("models", sa.Column("status_reason", sa.Text(), nullable=True))
    op.create_table(
        "model_comparisons",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("candidate_id", sa.String(length=64), nullable=False),
        sa.Column("active_id", sa.String(length=64), nullable=False),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("window", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("candidate_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_comparisons")),
    )
    op.create_index(
        op.f("ix_model_comparisons_candidate_id"), "model_comparisons", ["candidate_id"]
    )
    op.create_index(op.f("ix_model_comparisons_active_id"), "model_comparisons", ["active_id"])
    op.add_column("jobs", sa.Column("slot", sa.String(length=255), nullable=True))
    op.create_unique_constraint(op.f("uq_jobs_slot"), "jobs", ["slot"])


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_constraint(op.f("uq_jobs_slot"), "jobs", type_="unique")
    op.drop_column("jobs", "slot")
    op.drop_index(op.f("ix_model_comparisons_active_id"), table_name="model_comparisons")
    op.drop_index(op.f("ix_model_comparisons_candidate_id"), table_name="model_comparisons")
    op.drop_table("model_comparisons")
    op.drop_column("models", "status_reason")
    op.drop_column("models", "replaced_model_id")
