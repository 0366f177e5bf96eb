"""Unresolved signals: calls that named no account custintel could find yet (a Segment track for
a user whose identify or group has not arrived), kept with the identifiers that would resolve them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "unresolved_signals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("call", sa.String(length=32), nullable=False),
        sa.Column("keys", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("message", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unresolved_signals")),
    )
    op.create_index(
        op.f("ix_unresolved_signals_keys"),
        "unresolved_signals",
        ["keys"],
        unique=False,
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_unresolved_signals_keys"), table_name="unresolved_signals")
    op.drop_table("unresolved_signals")
