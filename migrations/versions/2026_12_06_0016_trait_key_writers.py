"""Who added each trait key (an API key or a webhook source), so that one writer cannot take
the installation's whole trait-key budget

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 22:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("trait_keys", sa.Column("added_by", sa.String(length=80), nullable=True))
    op.create_index(
        op.f("ix_trait_keys_added_by"), "trait_keys", ["kind", "added_by"], unique=False
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_index(op.f("ix_trait_keys_added_by"), table_name="trait_keys")
    op.drop_column("trait_keys", "added_by")
