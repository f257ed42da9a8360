"""WebSub subscriptions of the built-in hub: one row per (topic, callback).

A new table only: nothing existing is locked or rewritten, so old ingest processes keep
serving while it is created.

Revision ID: 0004_websub_subscriptions
Revises: 0003_bulletin_rendered_at_index
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_websub_subscriptions"
down_revision: str | None = "0003_bulletin_rendered_at_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("callback", sa.String(length=1000), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("pending_mode", sa.String(length=16), nullable=True),
        sa.Column("pending_lease", sa.Integer(), nullable=True),
        sa.Column("pending_secret", sa.String(length=200), nullable=True),
        sa.Column("token", sa.String(length=64), nullable=True),
        sa.Column("wanted_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("delivered_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("owed_since", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_delivery_at", sa.DateTime(), nullable=True),
        sa.Column("last_delivery_status", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("topic", "callback", name="uq_subscription_topic_callback"),
    )
    op.create_index("ix_subscription_topic_state", "subscriptions", ["topic", "state"])


def downgrade() -> None:
    op.drop_index("ix_subscription_topic_state", table_name="subscriptions")
    op.drop_table("subscriptions")
