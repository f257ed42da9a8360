"""Baseline: the schema of the last release without migrations (commit 0e58343).

Databases that release made with `create_all` are stamped with this revision, not re-created
(see shared/migrations/__init__.py), so this must stay exactly that schema.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_table(
        "bulletins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guid", sa.String(length=45), nullable=False),
        sa.Column("agency_id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("body_format", sa.String(length=16), nullable=False),
        sa.Column("body_source", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=True),
        sa.Column("category", sa.String(length=200), nullable=True),
        sa.Column("category_slug", sa.String(length=120), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("rendered_revision", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pending_since", sa.DateTime(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("rendered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        # In create_all's order, so the SQLite table's SQL text is the release's, verbatim.
        sa.UniqueConstraint("agency_id", "idempotency_key", name="uq_bulletin_idempotency"),
        sa.UniqueConstraint("guid"),
        sa.ForeignKeyConstraint(["agency_id"], ["agencies.id"]),
    )
    op.create_index(
        "ix_bulletin_listing_agency",
        "bulletins",
        ["agency_id", "status", "published_at", "id"],
    )
    op.create_index("ix_bulletin_listing_all", "bulletins", ["status", "published_at", "id"])
    op.create_index(
        "ix_bulletin_listing_category",
        "bulletins",
        ["category_slug", "status", "published_at", "id"],
    )
    op.create_index("ix_bulletin_pending_since", "bulletins", ["pending_since"])


def downgrade() -> None:
    op.drop_table("bulletins")
    op.drop_table("api_keys")
    op.drop_table("categories")
    op.drop_table("agencies")
