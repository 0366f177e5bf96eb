"""insights, routing rules and destinations, and the delivery outbox

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "insights",
        sa.Column("insight_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=255), nullable=True),
        sa.Column("owner_email", sa.String(length=320), nullable=True),
        sa.Column("model_id", sa.String(length=64), nullable=True),
        sa.Column("segment", sa.String(length=255), nullable=True),
        sa.Column("probability", sa.Float(), nullable=True),
        sa.Column("band", sa.String(length=16), nullable=True),
        sa.Column("previous_probability", sa.Float(), nullable=True),
        sa.Column("previous_band", sa.String(length=16), nullable=True),
        sa.Column("reasons", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("next_step", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("decision", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved')", name=op.f("ck_insights_status")
        ),
        sa.PrimaryKeyConstraint("insight_id", name=op.f("pk_insights")),
    )
    op.create_index(
        op.f("ix_insights_account_id"),
        "insights",
        ["account_id", "target", "kind", "created_at"],
    )
    op.create_index(op.f("ix_insights_owner_email"), "insights", ["owner_email", "created_at"])
    op.create_index(op.f("ix_insights_created_at"), "insights", ["created_at"])
    op.create_table(
        "routing_rules",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("match", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("destination_ids", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("owner", sa.String(length=320), nullable=True),
        sa.Column("holdout_share", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_routing_rules")),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("routing_rules")
    op.drop_index(op.f("ix_insights_created_at"), table_name="insights")
    op.drop_index(op.f("ix_insights_owner_email"), table_name="insights")
    op.drop_index(op.f("ix_insights_account_id"), table_name="insights")
    op.drop_table("insights")
