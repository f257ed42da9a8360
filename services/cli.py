"""The `bantin` command: run the system or one part of it, manage agencies, publish."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from shared.settings import Settings, get_settings


def _logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group()
def main() -> None:
    """Bantin: publish official bulletins as pages and feeds within a second."""


@main.command()
def up() -> None:
    """Start everything: embedded Redis (unless BANTIN_REDIS_URL is set), database, ingest,
    gateway, render and feed workers, reconciler. Ctrl-C stops it all."""
    from services import up as system

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    demo_key = system.prepare(settings)
    system.banner(settings, demo_key, settings.data_dir)
    sys.exit(system.Supervisor(settings).run())


@main.command()
@click.argument("kind", type=click.Choice(["render", "feed"]))
@click.option("--concurrency", "-c", type=int, default=None, help="Processes (default: cores).")
def worker(kind: str, concurrency: int | None) -> None:
    """Run one worker; start several (on any machine) to scale out."""
    settings = get_settings()
    if kind == "render":
        from services.render.pages import install_static
        from shared.storage import LocalStorage

        install_static(LocalStorage(settings.resolved_site_dir))
    from services.worker import app

    argv = [
        "worker",
        "--queues", kind,
        "--hostname", f"{kind}.{os.getpid()}@%h",
        "--loglevel", settings.log_level,
        # Gossip, mingle and heartbeats are cluster chatter we do not use; skipping them
        # saves a second at start-up and steady Redis traffic.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv)


@main.command()
def reconciler() -> None:
    """Re-send work Redis lost and restart stuck feed/page builds, every few seconds."""
    from services.reconciler.loop import run_forever
    from shared.celery_app import create_celery_app
    from shared.runtime import build_runtime

    _logging()
    settings = get_settings()
    run_forever(build_runtime(settings, create_celery_app(settings)))


@main.command("retry-failed")
def retry_failed() -> None:
    """Queue every `failed` bulletin for another round of attempts."""
    from services.reconciler.loop import retry_failed_bulletins
    from shared.celery_app import create_celery_app
    from shared.runtime import build_runtime

    settings = get_settings()
    count = retry_failed_bulletins(build_runtime(settings, create_celery_app(settings)))
    click.echo(f"re-queued {count} failed bulletin(s)")


@main.command("init-db")
def init_db() -> None:
    """Create the database tables (idempotent)."""
    _prepare_keys(get_settings())
    click.echo("database ready")


@main.group()
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
    _prepare_keys(settings)
    try:
        with session_scope(settings) as session:
            created, key = create_agency(session, name=name, slug=slug)
            click.echo(f"Created agency {created.name} ({created.slug}). Its API key (shown once):")
    except AgencyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(key)


@main.group()
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
    _prepare_keys(settings)
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
    _prepare_keys(settings)
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


def _prepare_keys(settings: Settings) -> None:
    from shared.agencies import add_key_columns
    from shared.db import create_schema, engine_for

    create_schema(settings)
    add_key_columns(engine_for(settings))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", envvar="BANTIN_API_KEY", required=True, help="The agency's API key.")
@click.option("--api", "api_url", default=None, help="Ingest API base URL.")
@click.option("--wait", "wait_seconds", default=30.0, show_default=True)
def publish(file: Path, key: str, api_url: str | None, wait_seconds: float) -> None:
    """Submit a text or JSON bulletin, wait until it is published, print its page URL."""
    import httpx

    from services.client import PublishError, load_bulletin
    from services.client import publish as submit

    settings = get_settings()
    api_url = api_url or f"http://{settings.ingest_host}:{settings.ingest_port}"
    try:
        bulletin = load_bulletin(file, settings.tz)
        document = submit(bulletin, api_url=api_url, key=key, wait_seconds=wait_seconds)
    except (PublishError, ValueError, OSError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"published bulletin {document['id']}: {document['title']}")
    click.echo(document["url"])


def _register_rebuild() -> None:
    from services.rebuild import rebuild

    main.add_command(rebuild)


_register_rebuild()

if __name__ == "__main__":
    main()
