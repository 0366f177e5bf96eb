"""trait_keys: every trait key ever used, per kind of profile, so that the number of keys can be
capped (each one can become a feature)

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "trait_keys",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('account', 'contact')", name=op.f("ck_trait_keys_kind")),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_trait_keys")),
    )
    for kind, table in (("account", "account_history"), ("contact", "contact_history")):
        op.execute(
            f"INSERT INTO trait_keys (kind, key) SELECT DISTINCT '{kind}', t.key FROM {table} h, "
            "jsonb_object_keys(h.changes -> 'traits') AS t(key) "
            "WHERE jsonb_typeof(h.changes -> 'traits') = 'object' ON CONFLICT DO NOTHING"
        )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("trait_keys")
