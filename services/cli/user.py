"""`bantin user`: the people who write an agency's bulletins in the web console.

`invite` prints a one-time sign-in link as the last line of stdout (scripts take
`| tail -n 1`); there is no mail server to send it, the operator passes it on. The user sets
a password with it and signs in at /console/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from services.cli.agency import _fit, _session, _table, _when
from shared.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shared.models import User


@contextmanager
def _user_session() -> Iterator[Session]:
    """agency's committed-on-success session; a refused user operation → one-line error."""
    from shared.users import UserError

    try:
        with _session() as session:
            yield session
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc


def _status(user: User, now: datetime) -> str:
    if user.disabled_at is not None:
        return "disabled"
    if user.agency.disabled_at is not None:
        return "agency-disabled"
    if user.password_hash is None:
        expires = user.invite_expires_at
        return "invited" if expires is not None and expires > now else "invite-expired"
    return "active"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@click.group()
def user() -> None:
    """Manage web console users: invite, list, disable."""


@user.command("invite")
@click.argument("email")
@click.option("--agency", "slug", required=True, help="The agency's slug, e.g. bac-kan.")
@click.option("--name", help="The person's name, as the console shows it.")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    help="How long the link works (default: BANTIN_CONSOLE_INVITE_HOURS).",
)
def user_invite(email: str, slug: str, name: str | None, hours: float | None) -> None:
    """Invite EMAIL to the agency's console (or again: the earlier link stops working). The
    one-time sign-in link is printed as the last line; it sets the user's password."""
    from sqlalchemy import select

    from shared.models import User
    from shared.users import invite, invite_link, normalise_email

    settings = get_settings()
    lifetime = hours if hours is not None else settings.console_invite_hours
    address = normalise_email(email)
    with _user_session() as session:
        token = invite(session, address, slug, hours=lifetime, name=name)
        until = session.scalars(select(User.invite_expires_at).where(User.email == address)).one()
    click.echo(f"Sign-in link for {address} ({slug}): works once, until {_when(until)} UTC.",
               err=True)  # fmt: skip
    click.echo(invite_link(settings.resolved_ingest_url, token))


@user.command("list")
@click.option("--agency", "slug", help="Only this agency's users.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def user_list(slug: str | None, as_json: bool) -> None:
    """Console users: agency, status (active, invited, invite-expired, disabled,
    agency-disabled), last sign-in."""
    from shared.models import utcnow
    from shared.users import list_users

    now = utcnow()
    with _user_session() as session:
        found = list_users(session, slug)  # kept loaded after the session (agency joined)
    if as_json:
        documents = [
            {"email": u.email, "name": u.name, "agency": u.agency.slug, "status": _status(u, now),
             "created_at": _iso(u.created_at), "last_sign_in_at": _iso(u.last_sign_in_at),
             "disabled_at": _iso(u.disabled_at)}
            for u in found
        ]  # fmt: skip
        click.echo(json.dumps({"users": documents}, ensure_ascii=False))
        return
    if not found:
        click.echo("No users yet: bantin user invite EMAIL --agency SLUG")
        return
    rows = [
        [u.email, _fit(u.name or "-", 32), u.agency.slug, _status(u, now),
         _when(u.last_sign_in_at), _when(u.created_at)]
        for u in found
    ]  # fmt: skip
    click.echo(_table(["EMAIL", "NAME", "AGENCY", "STATUS", "LAST SIGN-IN", "CREATED"], rows))


@user.command("disable")
@click.argument("email")
def user_disable(email: str) -> None:
    """Stop EMAIL from signing in; their console sessions and any pending link end now."""
    from shared.users import disable_user, normalise_email

    with _user_session() as session:
        disable_user(session, email)
    click.echo(
        f"Disabled user {normalise_email(email)}: they can no longer sign in, and their "
        "sessions have ended (`bantin user invite` lets them set a new password)."
    )


COMMANDS = [user]
