"""Index bulletins.rendered_at: `bantin status` reads the last minute's renders.

Revision ID: 0003_bulletin_rendered_at_index
Revises: 0002_agency_disabled_at
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_bulletin_rendered_at_index"
down_revision: str | None = "0002_agency_disabled_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_bulletin_rendered_at", "bulletins", ["rendered_at"])


def downgrade() -> None:
    op.drop_index("ix_bulletin_rendered_at", table_name="bulletins")
