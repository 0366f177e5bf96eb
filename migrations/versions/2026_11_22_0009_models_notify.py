"""notify API processes when the models table changes, so they can cache the active models

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute(
        """
        CREATE FUNCTION notify_models_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('custintel_models', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER models_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON models "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_models_changed()"
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("DROP TRIGGER models_changed ON models")
    op.execute("DROP FUNCTION notify_models_changed()")
