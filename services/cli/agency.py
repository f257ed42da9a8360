"""`bantin agency` and `bantin key`: agencies and their API keys."""

from __future__ import annotations

import click

from shared.migrations import upgrade as upgrade_schema
from shared.settings import get_settings


@click.group()
def agency() -> None:
    """Manage agencies."""


@agency.command("create")
@click.argument("name")
@click.option("--slug", help="URL name, e.g. bac-kan (default: from the name).")
def agency_create(name: str, slug: str | None) -> None:
    """Create an agency; its API key is printed once, as the last line."""
    from shared.agencies import AgencyError, create_agency
    from shared.db import session_scope

    settings = get_settings()
    upgrade_schema(settings)
    try:
        with session_scope(settings) as session:
            created, key = create_agency(session, name=name, slug=slug)
            click.echo(f"Created agency {created.name} ({created.slug}). Its API key (shown once):")
    except AgencyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)


@click.group()
def key() -> None:
    """Manage agencies' API keys (agencies can also do it themselves: /v1/keys)."""


@key.command("create")
@click.option("--agency", "slug", required=True, help="The agency's slug, e.g. bac-kan.")
def key_create(slug: str) -> None:
    """Mint a new key for an agency; it is printed once, as the last line."""
    from sqlalchemy import select

    from shared.agencies import AgencyError, issue_key
    from shared.db import session_scope
    from shared.models import Agency

    settings = get_settings()
    upgrade_schema(settings)
    try:
        with session_scope(settings) as session:
            agency_id = session.scalar(select(Agency.id).where(Agency.slug == slug))
            if agency_id is None:
                raise click.ClickException(f"no agency with the slug {slug!r}")
            row, new = issue_key(session, agency_id)
            click.echo(f"New key {row.prefix}… for {slug} (shown once):")
    except AgencyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(new)


@key.command("revoke")
@click.argument("prefix")
def key_revoke(prefix: str) -> None:
    """Revoke the one active key whose display prefix starts with PREFIX (as listed by
    GET /v1/keys, e.g. bt_live_AbCd1234). Every ingest process refuses it within a second."""
    from shared.agencies import keys_with_prefix, revoke_key
    from shared.db import session_scope

    settings = get_settings()
    upgrade_schema(settings)
    if len(prefix) < 8:
        raise click.ClickException("give at least 8 characters of the key's prefix")
    with session_scope(settings) as session:
        found = keys_with_prefix(session, prefix)
        if len(found) != 1:
            raise click.ClickException(
                f"{len(found)} active keys start with {prefix!r}: give exactly one"
            )
        revoke_key(session, found[0].agency_id, found[0].id)
        click.echo(f"revoked key {found[0].id} ({found[0].prefix}…)")


COMMANDS = [agency, key]
