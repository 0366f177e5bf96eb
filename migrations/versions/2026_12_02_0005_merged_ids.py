"""Merged ids: a contact or account merged into another, so that its id keeps resolving to the
survivor

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "merged_ids",
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("merged_id", sa.String(length=255), nullable=False),
        sa.Column("survivor_id", sa.String(length=255), nullable=False),
        sa.Column(
            "merged_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("subject IN ('account', 'contact')", name=op.f("ck_merged_ids_subject")),
        sa.PrimaryKeyConstraint("subject", "merged_id", name=op.f("pk_merged_ids")),
    )
    op.create_index(
        op.f("ix_merged_ids_subject"),
        "merged_ids",
        ["subject", "survivor_id"],
        unique=False,
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_merged_ids_subject"), table_name="merged_ids")
    op.drop_table("merged_ids")
