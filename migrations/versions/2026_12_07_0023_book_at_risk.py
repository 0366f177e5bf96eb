"""The book's ranking kept with each latest churn score: value at risk (MRR x churn probability),
indexed, and kept right when an account's MRR changes; accounts indexed by owner (a CSM's book)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column(
        "latest_scores",
        sa.Column("at_risk", sa.Double(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        """
        UPDATE latest_scores l SET at_risk = coalesce(a.mrr, 0)::float8 * l.probability
        FROM accounts a WHERE a.account_id = l.account_id AND l.target = 'churn'
        """
    )
    op.create_index(
        op.f("ix_latest_scores_at_risk"), "latest_scores", ["target", "at_risk", "account_id"]
    )
    op.create_index(op.f("ix_accounts_owner_email"), "accounts", ["owner_email", "segment"])
    op.execute(
        """
        CREATE FUNCTION latest_scores_at_risk() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE latest_scores SET at_risk = coalesce(NEW.mrr, 0)::float8 * probability
            WHERE account_id = NEW.account_id AND target = 'churn';
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER accounts_at_risk AFTER UPDATE OF mrr ON accounts FOR EACH ROW
        WHEN (OLD.mrr IS DISTINCT FROM NEW.mrr) EXECUTE FUNCTION latest_scores_at_risk()
        """
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.execute("DROP TRIGGER accounts_at_risk ON accounts")
    op.execute("DROP FUNCTION latest_scores_at_risk()")
    op.drop_index(op.f("ix_accounts_owner_email"), table_name="accounts")
    op.drop_index(op.f("ix_latest_scores_at_risk"), table_name="latest_scores")
    op.drop_column("latest_scores", "at_risk")
