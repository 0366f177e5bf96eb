"""A theme's texts found by the themes array (GIN), for the console's examples of rare themes

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 23:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_index(
        op.f("ix_text_enrichments_themes"),
        "text_enrichments",
        ["themes"],
        postgresql_using="gin",
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_text_enrichments_themes"), table_name="text_enrichments")
