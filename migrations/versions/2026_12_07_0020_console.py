"""The console: its users with roles, their sessions, sign-in attempts (for the rate limit),
saved views of the book, and each account's latest score per target with the one before it

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    now = sa.text("now()")
    op.create_table(
        "users",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("team", sa.String(length=255), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", TS, server_default=now, nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
        sa.CheckConstraint("role IN ('csm', 'lead', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, server_default=now, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_web_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_web_sessions")),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("at", TS, server_default=now, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index(op.f("ix_login_attempts_email"), "login_attempts", ["email", "at"])
    op.create_index(op.f("ix_login_attempts_address"), "login_attempts", ["address", "at"])
    op.create_table(
        "saved_views",
        sa.Column("view_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("filters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", TS, server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_saved_views_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("view_id", name=op.f("pk_saved_views")),
    )
    op.create_index(op.f("ix_saved_views_user_id"), "saved_views", ["user_id"])
    op.create_table(
        "latest_scores",
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.Column("reasons", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("previous_as_of", TS, nullable=True),
        sa.Column("previous_probability", sa.Double(), nullable=True),
        sa.Column("previous_band", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "target", name=op.f("pk_latest_scores")),
    )
    op.create_index(op.f("ix_latest_scores_target"), "latest_scores", ["target", "probability"])
    # Filled from the score history: each account's latest score per target, and the one before.
    op.execute(
        """
        INSERT INTO latest_scores
        SELECT account_id, target, model_id, as_of, probability, band, reasons,
               previous_as_of, previous_probability, previous_band
        FROM (
            SELECT account_id, target, model_id, as_of, probability, band, reasons,
                   lead(as_of) OVER w AS previous_as_of,
                   lead(probability) OVER w AS previous_probability,
                   lead(band) OVER w AS previous_band,
                   row_number() OVER w AS n
            FROM scores
            WINDOW w AS (
                PARTITION BY account_id, target ORDER BY as_of DESC, scored_at DESC, id DESC
            )
        ) s
        WHERE n = 1
        """
    )


def downgrade() -> None:
    op.execute("SET lock_timeout = '5s'")
    op.drop_table("latest_scores")
    op.drop_table("saved_views")
    op.drop_table("login_attempts")
    op.drop_table("web_sessions")
    op.drop_table("users")
