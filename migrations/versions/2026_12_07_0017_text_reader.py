"""Which sentiment reader read each text (NULL: the lexicon), so that a training set or a batch
rescoring reads every text with the reader in use, even while a re-reading is under way

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.add_column("text_enrichments", sa.Column("reader_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_column("text_enrichments", "reader_id")
