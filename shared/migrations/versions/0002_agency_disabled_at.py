"""Agencies can be disabled: agencies.disabled_at (NULL: active).

Revision ID: 0002_agency_disabled_at
Revises: 0001_baseline
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_agency_disabled_at"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: a plain ALTER on PostgreSQL and on SQLite (adding a nullable column needs
    # no table copy); a copy-and-swap on SQLite only for changes its ALTER cannot make.
    with op.batch_alter_table("agencies") as batch:
        batch.add_column(sa.Column("disabled_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agencies") as batch:
        batch.drop_column("disabled_at")
