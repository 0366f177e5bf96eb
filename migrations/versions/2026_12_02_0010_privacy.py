"""Privacy: the suppression list of erased identifiers (keyed hashes only) and the
installation's sealed secrets (the hashing pepper)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.create_table(
        "privacy_suppressions",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("erasure_id", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_privacy_suppressions")),
    )
    op.create_table(
        "installation_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_installation_secrets")),
    )
    op.drop_constraint(op.f("ck_source_deliveries_status"), "source_deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_source_deliveries_status"),
        "source_deliveries",
        "status IN ('accepted', 'ignored', 'rejected', 'held', 'suppressed')",
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("UPDATE source_deliveries SET status = 'ignored' WHERE status = 'suppressed'")
    op.drop_constraint(op.f("ck_source_deliveries_status"), "source_deliveries", type_="check")
    op.create_check_constraint(
        op.f("ck_source_deliveries_status"),
        "source_deliveries",
        "status IN ('accepted', 'ignored', 'rejected', 'held')",
    )
    op.drop_table("installation_secrets")
    op.drop_table("privacy_suppressions")
