"""Text enrichments: the sentiment (and later the themes) of every event with text, computed off
the request path by the worker; a BRIN index on events' received_at, by which the worker finds
new texts (a BTREE index, even partial on the events with text, cost batch ingest 6%; a BRIN
index is a summary per range of pages, and events arrive in received_at order); a partial
index on survey answers by type and time, which only they pay for, for NPS, CSAT and CES

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "text_enrichments",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sentiment", sa.Double(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column(
            "enriched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "label IN ('negative', 'neutral', 'positive')", name=op.f("ck_text_enrichments_label")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_text_enrichments")),
    )
    op.create_index(op.f("ix_text_enrichments_received_at"), "text_enrichments", ["received_at"])
    op.create_index(
        "ix_events_received_at_brin", "events", ["received_at"], postgresql_using="brin"
    )
    op.create_index(
        "ix_events_surveys",
        "events",
        ["type", "occurred_at"],
        postgresql_where=sa.text("type IN ('nps_answered', 'csat_answered', 'ces_answered')"),
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index("ix_events_surveys", table_name="events")
    op.drop_index("ix_events_received_at_brin", table_name="events")
    op.drop_index(op.f("ix_text_enrichments_received_at"), table_name="text_enrichments")
    op.drop_table("text_enrichments")
