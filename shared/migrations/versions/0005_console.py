"""The web console: users and their sessions; bulletins' withdrawal notice and folded title.

New tables, and two nullable columns on bulletins (no table rewrite on PostgreSQL or SQLite),
so old ingest processes keep serving meanwhile. The folded titles of existing bulletins are
filled in batches of ids, with the fold of this release (shared.slug.fold), so search finds
bulletins written before the console too.

Revision ID: 0005_console
Revises: 0004_websub_subscriptions
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.slug import fold

revision: str = "0005_console"
down_revision: str | None = "0004_websub_subscriptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_BATCH = 500  # rows read and written at a time: memory stays flat on a big archive


def upgrade() -> None:
    # Batch mode: a plain ALTER on PostgreSQL and on SQLite (nullable columns need no copy).
    with op.batch_alter_table("bulletins") as batch:
        batch.add_column(sa.Column("withdrawal_notice", sa.Text(), nullable=True))
        batch.add_column(sa.Column("title_folded", sa.Text(), nullable=True))
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("invite_hash", sa.String(length=64), nullable=True),
        sa.Column("invite_expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_sign_in_at", sa.DateTime(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
        sa.UniqueConstraint("invite_hash"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    _backfill_folded_titles()


def _backfill_folded_titles() -> None:
    if op.get_context().as_sql:
        return  # `--sql` prints DDL only: the fold is Python, it has no SQL to print
    connection = op.get_bind()
    bulletins = sa.table(
        "bulletins",
        sa.column("id", sa.Integer()),
        sa.column("title", sa.Text()),
        sa.column("title_folded", sa.Text()),
    )
    after = 0
    while True:
        rows = connection.execute(
            sa.select(bulletins.c.id, bulletins.c.title)
            .where(bulletins.c.id > after)
            .order_by(bulletins.c.id)
            .limit(BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            sa.update(bulletins)
            .where(bulletins.c.id == sa.bindparam("row_id"))
            .values(title_folded=sa.bindparam("folded")),
            [{"row_id": row_id, "folded": fold(title)} for row_id, title in rows],
        )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_console_sessions_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("users")
    with op.batch_alter_table("bulletins") as batch:
        batch.drop_column("title_folded")
        batch.drop_column("withdrawal_notice")
