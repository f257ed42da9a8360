"""`bantin worker`, `bantin reconciler`, `bantin retry-failed`: the processes that do the work."""

from __future__ import annotations

import os

import click

from shared.settings import get_settings


@click.command()
@click.argument("kind", type=click.Choice(["render", "feed"]))
@click.option("--concurrency", "-c", type=int, default=None, help="Processes (default: cores).")
def worker(kind: str, concurrency: int | None) -> None:
    """Run one worker; start several (on any machine) to scale out."""
    settings = get_settings()
    if kind == "render":
        from services.render.pages import install_static
        from shared.storage import LocalStorage

        install_static(LocalStorage(settings.resolved_site_dir))
    from services.cli.worker import app

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


@click.command()
def reconciler() -> None:
    """Re-send work Redis lost and restart stuck feed/page builds, every few seconds."""
    from services.reconciler.loop import run_forever
    from shared.celery_app import create_celery_app
    from shared.logs import configure_logging
    from shared.runtime import build_runtime

    settings = get_settings()
    configure_logging(settings, "reconciler")
    run_forever(build_runtime(settings, create_celery_app(settings)))


@click.command("retry-failed")
def retry_failed() -> None:
    """Queue every `failed` bulletin for another round of attempts."""
    from services.reconciler.loop import retry_failed_bulletins
    from shared.celery_app import create_celery_app
    from shared.runtime import build_runtime

    settings = get_settings()
    count = retry_failed_bulletins(build_runtime(settings, create_celery_app(settings)))
    click.echo(f"re-queued {count} failed bulletin(s)")


COMMANDS = [worker, reconciler, retry_failed]
