"""`bantin db`: the database schema (upgrade, current revision)."""

from __future__ import annotations

import click

from shared.settings import get_settings


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
def upgrade() -> None:
    """Bring the database to the newest schema (idempotent; `bantin up` does it too)."""
    from shared.migrations import upgrade as upgrade_schema

    upgrade_schema(get_settings())
    click.echo("database ready")


@db.command()
def current() -> None:
    """Print the schema revision the database is at."""
    from shared.migrations import current as current_revision

    click.echo(current_revision(get_settings()) or "not versioned")


@click.command("init-db", hidden=True)
def init_db() -> None:
    """Same as `bantin db upgrade` (kept for scripts written before it)."""
    from shared.migrations import upgrade as upgrade_schema

    upgrade_schema(get_settings())
    click.echo("database ready")


COMMANDS = [db, init_db]
