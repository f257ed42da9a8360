"""`bantin publish`: submit a bulletin file and wait until its page is online."""

from __future__ import annotations

from pathlib import Path

import click

from shared.settings import Settings, get_settings


def find_api(settings: Settings) -> tuple[str, str]:
    """The ingest API to use, and where that came from: the `bantin up` running on the data
    dir (its run.json), else the settings."""
    from services.cli.up import read_run_state, run_state_file

    state = read_run_state(settings.data_dir)
    if state and isinstance(state.get("ingest_url"), str):
        return state["ingest_url"], f"the running `bantin up` ({run_state_file(settings.data_dir)})"
    return settings.resolved_ingest_url, (
        f"the settings (no `bantin up` runs on data dir {settings.data_dir.resolve()}; "
        "BANTIN_INGEST_HOST / BANTIN_INGEST_PORT / BANTIN_INGEST_PUBLIC_URL)"
    )


def missing_key_message(settings: Settings) -> str:
    message = "no API key: give --key KEY or set BANTIN_API_KEY"
    demo = settings.data_dir / "demo-agency.key"
    if demo.exists():
        message += (
            f'. The demo agency\'s key, made by `bantin up`, is in {demo}: --key "$(cat {demo})"'
        )
    return message


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", envvar="BANTIN_API_KEY", default=None, help="The agency's API key.")
@click.option(
    "--api",
    "api_url",
    default=None,
    help="Ingest API base URL. Default: the `bantin up` running on BANTIN_DATA_DIR, else the "
    "BANTIN_INGEST_* settings.",
)
@click.option("--wait", "wait_seconds", default=30.0, show_default=True)
def publish(file: Path, key: str | None, api_url: str | None, wait_seconds: float) -> None:
    """Submit a text or JSON bulletin, wait until it is published, print its page URL."""
    import httpx

    from services.cli.client import PublishError, load_bulletin
    from services.cli.client import publish as submit

    settings = get_settings()
    if not key:
        raise click.UsageError(missing_key_message(settings))
    source = "--api"
    if not api_url:
        api_url, source = find_api(settings)
    try:
        bulletin = load_bulletin(file, settings.tz)
        document = submit(bulletin, api_url=api_url, key=key, wait_seconds=wait_seconds)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise click.ClickException(
            f"cannot reach the ingest API at {api_url} (from {source}): {exc}. Start `bantin "
            "up`, or give the API's address with --api URL"
        ) from None
    except (PublishError, ValueError, OSError, httpx.HTTPError) as exc:
        raise click.ClickException(f"{exc} (ingest API at {api_url})") from None
    click.echo(f"published bulletin {document['id']}: {document['title']}")
    click.echo(document["url"])


COMMANDS = [publish]
