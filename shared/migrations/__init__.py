"""The database schema's versions: bring any database Bantin ever made to the current one.

Placeholder until the Alembic migrations land: creates missing tables and columns in place.
"""

from __future__ import annotations

from shared.settings import Settings


def upgrade(settings: Settings) -> None:
    """Bring the database to the newest schema (idempotent)."""
    from shared.agencies import add_key_columns
    from shared.db import create_schema, engine_for

    create_schema(settings)
    add_key_columns(engine_for(settings))


def current(settings: Settings) -> str | None:
    """The schema revision the database is at (None: not versioned)."""
    return None
