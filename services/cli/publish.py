"""`bantin publish`: submit a bulletin file and wait until its page is online."""

from __future__ import annotations

from pathlib import Path

import click

from shared.settings import get_settings


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", envvar="BANTIN_API_KEY", required=True, help="The agency's API key.")
@click.option("--api", "api_url", default=None, help="Ingest API base URL.")
@click.option("--wait", "wait_seconds", default=30.0, show_default=True)
def publish(file: Path, key: str, api_url: str | None, wait_seconds: float) -> None:
    """Submit a text or JSON bulletin, wait until it is published, print its page URL."""
    import httpx

    from services.cli.client import PublishError, load_bulletin
    from services.cli.client import publish as submit

    settings = get_settings()
    api_url = api_url or f"http://{settings.ingest_host}:{settings.ingest_port}"
    try:
        bulletin = load_bulletin(file, settings.tz)
        document = submit(bulletin, api_url=api_url, key=key, wait_seconds=wait_seconds)
    except (PublishError, ValueError, OSError, httpx.HTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"published bulletin {document['id']}: {document['title']}")
    click.echo(document["url"])


COMMANDS = [publish]
