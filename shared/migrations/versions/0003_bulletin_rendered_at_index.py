"""Index bulletins.rendered_at: `bantin status` reads the last minute's renders.

On PostgreSQL the index is built CONCURRENTLY, outside any transaction (an autocommit block):
a plain CREATE INDEX would block every insert into a big bulletins table while the old
release's ingest containers still serve. A concurrent build that failed leaves an INVALID
index behind; it is dropped and built again, and IF NOT EXISTS lets a retry after a crash
between the build and the version stamp pass. On SQLite, a plain CREATE INDEX.

Revision ID: 0003_bulletin_rendered_at_index
Revises: 0002_agency_disabled_at
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0003_bulletin_rendered_at_index"
down_revision: str | None = "0002_agency_disabled_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_bulletin_rendered_at"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(INDEX, "bulletins", ["rendered_at"])
        return
    with op.get_context().autocommit_block():
        valid = op.get_bind().scalar(
            text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
            {"name": INDEX},
        )
        if valid is False:  # left by a concurrent build that failed
            op.drop_index(INDEX, table_name="bulletins", postgresql_concurrently=True)
        op.create_index(
            INDEX, "bulletins", ["rendered_at"], postgresql_concurrently=True, if_not_exists=True
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.drop_index(INDEX, table_name="bulletins")
        return
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="bulletins", postgresql_concurrently=True, if_exists=True)
