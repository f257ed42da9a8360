"""`bantin worker`, `bantin reconciler`, `bantin retry-failed`: the processes that do the work."""

from __future__ import annotations

import os

import click

from shared.settings import get_settings

# Threads of a deliver worker: deliveries wait on subscribers' networks, not the CPU.
DELIVER_THREADS = 16


@click.command()
@click.argument("kind", type=click.Choice(["render", "feed", "deliver"]))
@click.option("--concurrency", "-c", type=int, default=None, help="Processes (default: cores).")
def worker(kind: str, concurrency: int | None) -> None:
    """Run one worker; start several (on any machine) to scale out."""
    from shared.metrics import enable_multiprocess

    # Before any metric exists and before the pool forks: every pool process writes its
    # samples to this fresh directory, and the worker's one /metrics sums them.
    enable_multiprocess()
    os.environ["BANTIN_WORKER_ROLE"] = kind  # names this node in logs and heartbeats
    settings = get_settings()
    if kind == "render":
        from services.gateway.app import not_found_page
        from services.render.pages import install_static
        from shared.site import NOT_FOUND_PATH
        from shared.storage import open_storage

        storage = open_storage(settings)
        install_static(storage)
        # nginx (deploy/nginx.conf, nginx-s3.conf) answers 404s with this very page by itself.
        storage.put(NOT_FOUND_PATH, not_found_page())
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
    if kind == "deliver":
        # A slow subscriber then holds up one thread until its timeout, not a whole process;
        # the deliver tasks share nothing but thread-safe clients (and never touch feedgen's
        # process-wide locale).
        argv += ["--pool", "threads"]
        concurrency = concurrency or DELIVER_THREADS
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    app.worker_main(argv)


@click.command()
def reconciler() -> None:
    """Re-send work Redis lost and restart stuck feed/page builds, every few seconds."""
    from prometheus_client import REGISTRY

    from services.reconciler.loop import LoopState, run_forever
    from services.reconciler.metrics import QueueCollector
    from shared.celery_app import create_celery_app
    from shared.heartbeat import Heartbeat, new_beat
    from shared.logs import configure_logging
    from shared.metrics import metrics_url, serve
    from shared.runtime import build_runtime

    settings = get_settings()
    configure_logging(settings, "reconciler")
    runtime = build_runtime(settings, create_celery_app(settings))
    # One process, no fork: the default registry, plus the queue gauges that only this
    # singleton serves (see services/reconciler/metrics.py).
    url, stop_server = None, None
    if settings.metrics_port is not None:
        REGISTRY.register(QueueCollector(settings, runtime.redis))
        port, stop_server = serve(settings.metrics_host, settings.metrics_port, REGISTRY)
        url = metrics_url(settings.metrics_host, port)
    state = LoopState()
    heartbeat = Heartbeat(runtime.redis, new_beat("reconciler", url), state.info).start()
    try:
        run_forever(runtime, state)
    finally:
        heartbeat.stop()
        if stop_server is not None:
            stop_server()


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
