"""Sentiment readers: the reader of texts' sentiment chosen from the installation's own survey
comments (app.voc.learned): the lexicon, a classifier learned from the comments, or both

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "sentiment_readers",
        sa.Column("reader_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('lexicon', 'learned', 'blend')", name=op.f("ck_sentiment_readers_kind")
        ),
        sa.PrimaryKeyConstraint("reader_id", name=op.f("pk_sentiment_readers")),
    )
    op.create_index(
        op.f("ix_sentiment_readers_created_at"), "sentiment_readers", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_sentiment_readers_created_at"), table_name="sentiment_readers")
    op.drop_table("sentiment_readers")
