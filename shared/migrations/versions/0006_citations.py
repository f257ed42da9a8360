"""Legal-document citations: the documents bulletins cite, and which revision cites which.

Two new tables and a nullable column on bulletins (which revision's citations are live), so
old processes keep serving meanwhile. Nothing is
backfilled here: the render step extracts citations (shared.citations) for every revision it
renders, and `bantin rebuild` re-renders what is live, extracting the citations of bulletins
published before this release and linking them in their pages.

Revision ID: 0006_citations
Revises: 0005_console
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_citations"
down_revision: str | None = "0005_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: no table rewrite; NULL (no live citations) until a render or `bantin rebuild`.
    with op.batch_alter_table("bulletins") as batch:
        batch.add_column(sa.Column("cited_revision", sa.Integer(), nullable=True))
    op.create_table(
        "documents",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("doc_type", sa.String(length=60), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=True),
        sa.Column("issuer", sa.String(length=60), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "citations",
        sa.Column("bulletin_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("document_key", sa.String(length=120), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["bulletin_id"], ["bulletins.id"], name="fk_citations_bulletin"),
        sa.ForeignKeyConstraint(["document_key"], ["documents.key"], name="fk_citations_document"),
        sa.PrimaryKeyConstraint("bulletin_id", "revision", "document_key", name="pk_citations"),
    )
    op.create_index(
        "ix_citation_listing", "citations", ["document_key", "published_at", "bulletin_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_citation_listing", table_name="citations")
    op.drop_table("citations")
    op.drop_table("documents")
    with op.batch_alter_table("bulletins") as batch:
        batch.drop_column("cited_revision")
