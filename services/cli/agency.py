"""`bantin agency` and `bantin key`: agencies and their API keys.

Every command that shows a new key prints it once, as the last line, so scripts can take
`| tail -n 1`. A disabled agency, a revoked or rotated-away key is refused by every ingest
process within a second.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

REFUSED_WITHIN = "every ingest process refuses it within a second"


@contextmanager
def _session() -> Iterator[Session]:
    """A committed-on-success session on the current schema; AgencyError, a concurrent
    duplicate and an unreachable database → one-line click errors."""
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    from shared.agencies import AgencyError
    from shared.db import session_scope
    from shared.migrations import SchemaError

    settings = get_settings()
    try:
        _require_schema(settings)
        with session_scope(settings) as session:
            yield session
    except AgencyError as exc:
        raise click.ClickException(str(exc)) from exc
    except IntegrityError as exc:  # the same slug created at the same moment elsewhere
        raise click.ClickException(f"conflicts with a concurrent change: {exc.orig}") from exc
    except (SchemaError, SQLAlchemyError) as exc:
        raise click.ClickException(f"database: {exc}".splitlines()[0]) from exc


def _require_schema(settings: Settings) -> None:
    """Create the schema in an empty database (a first `bantin agency create` before any
    `bantin up`), but never upgrade one in use: a newer `bantin` run against production must
    not change the tables under the processes still running the older release."""
    from sqlalchemy import inspect

    from shared.db import engine_for
    from shared.migrations import current, head, upgrade

    at = current(settings)
    if at == head():
        return
    if at is None and not inspect(engine_for(settings)).get_table_names():
        upgrade(settings)
        return
    raise click.ClickException(
        f"the database schema is at {at or 'an unversioned earlier release'}, this bantin "
        f"needs {head()}: run `bantin db upgrade` first (`bantin up` and the compose "
        "`migrate` service do it)"
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def _fit(text: str, width: int) -> str:
    text = unicodedata.normalize("NFC", text)  # Vietnamese names: one code point per letter
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [headers, *rows]]  # fmt: skip
    return "\n".join(lines)


@click.group()
def agency() -> None:
    """Manage agencies: list, create, rotate-key, disable, enable."""


@agency.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def agency_list(as_json: bool) -> None:
    """Every agency: status, active keys, bulletins by status."""
    from shared.agencies import list_agencies

    with _session() as session:
        agencies = list_agencies(session)
    if as_json:
        click.echo(json.dumps({"agencies": [a.as_dict() for a in agencies]}, ensure_ascii=False))
        return
    if not agencies:
        click.echo("No agencies yet: bantin agency create NAME")
        return
    statuses = ("published", "queued", "scheduled", "failed", "withdrawn")
    headers = ["SLUG", "NAME", "STATUS", "KEYS", *(s.upper() for s in statuses), "CREATED"]
    rows = [
        [a.slug, _fit(a.name, 32), a.status, str(a.active_keys),
         *(str(a.bulletins[s]) for s in statuses), _when(a.created_at)]
        for a in agencies
    ]  # fmt: skip
    click.echo(_table(headers, rows))


@agency.command("create")
@click.argument("name")
@click.option("--slug", help="URL name, e.g. bac-kan (default: from the name).")
def agency_create(name: str, slug: str | None) -> None:
    """Create an agency; its API key is printed once, as the last line."""
    from shared.agencies import create_agency

    with _session() as session:
        created, key = create_agency(session, name=name, slug=slug)
        click.echo(f"Created agency {created.name} ({created.slug}). Its API key (shown once):")
    click.echo(key)


@agency.command("rotate-key")
@click.argument("slug")
@click.option(
    "--keep-old",
    is_flag=True,
    help="Keep the agency's other keys active so it can switch over; revoke them later "
    "with `bantin key revoke`.",
)
def agency_rotate_key(slug: str, keep_old: bool) -> None:
    """Mint a new key for the agency and revoke its others; the new key is printed once, as
    the last line."""
    from shared.agencies import rotate_key

    with _session() as session:
        rotation = rotate_key(session, slug, keep_old=keep_old)
        prefix = rotation.key.prefix
    if keep_old:
        click.echo(f"New key {prefix}… for {slug}; its other keys stay active until revoked.")
    elif rotation.revoked:
        ids = ", ".join(str(key_id) for key_id in rotation.revoked)
        which = "key" if len(rotation.revoked) == 1 else "keys"
        click.echo(f"New key {prefix}… for {slug}; revoked {which} {ids} ({REFUSED_WITHIN}).")
    else:
        click.echo(f"New key {prefix}… for {slug}; it had no other active key.")
    click.echo("The new key (shown once):")
    click.echo(rotation.secret)


def _set_disabled(slug: str, disabled: bool) -> None:
    from shared.agencies import agency_summary, set_disabled

    with _session() as session:
        changed = set_disabled(session, slug, disabled)
        summary = agency_summary(session, slug)
    if not changed:
        since = f" (since {_when(summary.disabled_at)} UTC)" if summary.disabled_at else ""
        raise click.ClickException(f"agency {slug!r} is already {summary.status}{since}")


@agency.command("disable")
@click.argument("slug")
def agency_disable(slug: str) -> None:
    """Refuse the agency's keys (403 "agency disabled"); its published bulletins stay online
    and bulletins it already queued still publish."""
    _set_disabled(slug, True)
    click.echo(
        f"Disabled agency {slug}: every ingest process refuses its keys within a second; "
        "its published bulletins stay online."
    )


@agency.command("enable")
@click.argument("slug")
def agency_enable(slug: str) -> None:
    """Accept a disabled agency's keys again."""
    _set_disabled(slug, False)
    click.echo(f"Enabled agency {slug}: its keys work again within a second.")


@click.group()
def key() -> None:
    """Manage agencies' API keys (agencies can also do it themselves: /v1/keys)."""


@key.command("list")
@click.option("--agency", "slug", required=True, help="The agency's slug, e.g. bac-kan.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
def key_list(slug: str, as_json: bool) -> None:
    """The agency's keys, revoked ones included (never the keys themselves)."""
    from shared.agencies import agency_id_for, list_keys

    with _session() as session:
        keys = list_keys(session, agency_id_for(session, slug))
    if as_json:
        documents = [
            {"id": k.id, "prefix": k.prefix, "created_at": k.created_at.isoformat(),
             "revoked_at": None if k.revoked_at is None else k.revoked_at.isoformat()}
            for k in keys
        ]  # fmt: skip
        click.echo(json.dumps({"agency": slug, "keys": documents}))
        return
    rows = [
        [str(k.id), k.prefix or "(none: revoke by id)", "revoked" if k.revoked_at else "active",
         _when(k.created_at), _when(k.revoked_at)]
        for k in keys
    ]  # fmt: skip
    click.echo(_table(["ID", "PREFIX", "STATUS", "CREATED", "REVOKED"], rows))


@key.command("create")
@click.option("--agency", "slug", required=True, help="The agency's slug, e.g. bac-kan.")
def key_create(slug: str) -> None:
    """Mint a new key for an agency; it is printed once, as the last line."""
    from shared.agencies import agency_id_for, issue_key

    with _session() as session:
        row, new = issue_key(session, agency_id_for(session, slug))
        click.echo(f"New key {row.prefix}… for {slug} (shown once):")
    click.echo(new)


@key.command("revoke")
@click.argument("key_ref", metavar="PREFIX_OR_ID")
def key_revoke(key_ref: str) -> None:
    """Revoke a key by its id (as `bantin key list` shows it; the only name of keys issued
    before prefixes were kept), or by the one active key whose display prefix starts with
    PREFIX (e.g. bt_live_AbCd1234). Every ingest process refuses it within a second."""
    from shared.agencies import keys_by_id, keys_with_prefix, revoke_key

    with _session() as session:
        if key_ref.isdigit():
            found = keys_by_id(session, int(key_ref))
            if found is None:
                raise click.ClickException(f"no key with the id {key_ref}")
            if found.revoked_at is not None:
                raise click.ClickException(f"key {found.id} is already revoked")
        else:
            if len(key_ref) < 8:
                raise click.ClickException("give a key id, or at least 8 characters of a prefix")
            matches = keys_with_prefix(session, key_ref)
            if len(matches) != 1:
                raise click.ClickException(
                    f"{len(matches)} active keys start with {key_ref!r}: give exactly one"
                )
            found = matches[0]
        revoke_key(session, found.agency_id, found.id)
        label = f"{found.prefix}…" if found.prefix else "no prefix"
        click.echo(f"revoked key {found.id} ({label}) of {found.agency.slug}: {REFUSED_WITHIN}")


COMMANDS = [agency, key]
