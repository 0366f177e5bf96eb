"""Destinations' signing secrets as bytes, to be sealed (app.governance.vault.prepare seals those
still in the clear when the service starts, before it serves)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE destinations "
        "ALTER COLUMN secret TYPE bytea USING convert_to(secret, 'UTF8'), "
        "ALTER COLUMN previous_secret TYPE bytea USING convert_to(previous_secret, 'UTF8')"
    )


def downgrade() -> None:
    # Sealed secrets cannot be read back without the key: a downgrade keeps them sealed as
    # text (hex), and destinations need new secrets after it (POST .../rotate).
    op.execute("SET lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE destinations "
        "ALTER COLUMN secret TYPE text USING encode(secret, 'hex'), "
        "ALTER COLUMN previous_secret TYPE text USING encode(previous_secret, 'hex')"
    )
