"""Sources: senders (Stripe, Zendesk, HubSpot, Intercom) whose signed webhooks custintel
receives, with their encrypted signing secrets, and every delivery they made (by the sender's
own id: idempotency, counts, rejections to replay, raw payloads for a retention period)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "sources",
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "settings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('stripe', 'zendesk', 'hubspot', 'intercom')", name=op.f("ck_sources_kind")
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_sources")),
    )
    op.create_table(
        "source_deliveries",
        sa.Column("source_id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("rejection_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_type", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("redeliveries", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('accepted', 'ignored', 'rejected', 'held')",
            name=op.f("ck_source_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.source_id"],
            name=op.f("fk_source_deliveries_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", "delivery_id", name=op.f("pk_source_deliveries")),
        sa.UniqueConstraint("rejection_id", name=op.f("uq_source_deliveries_rejection_id")),
    )
    op.create_index(
        op.f("ix_source_deliveries_source_id"),
        "source_deliveries",
        ["source_id", "status", "received_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_source_deliveries_received_at"),
        "source_deliveries",
        ["received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_source_deliveries_received_at"), table_name="source_deliveries")
    op.drop_index(op.f("ix_source_deliveries_source_id"), table_name="source_deliveries")
    op.drop_table("source_deliveries")
    op.drop_table("sources")
