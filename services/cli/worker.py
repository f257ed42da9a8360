"""Celery entry point: `celery -A services.cli.worker worker -Q render` (or `bantin worker`).

Besides the app, this wires the worker's observability into Celery's signals, in the main
process before the pool forks: our logging instead of Celery's (`setup_logging`), the
multiprocess metrics directory and task metrics (`import_modules`, inherited by every pool
process), one /metrics server and one heartbeat per worker node (`worker_init`,
`worker_ready`, `worker_shutdown`).

Importing this module does nothing else: `celery -A services.cli.worker inspect ping` (the
compose healthcheck) imports it too, and must leave no metrics directory behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery.signals import (
    import_modules,
    setup_logging,
    worker_init,
    worker_ready,
    worker_shutdown,
)
from redis import Redis

from shared.celery_app import create_celery_app
from shared.heartbeat import Heartbeat, new_beat
from shared.logs import configure_logging
from shared.metrics import enable_multiprocess, mark_dead_processes, metrics_url, multiprocess_mode
from shared.settings import get_settings

log = logging.getLogger(__name__)

app = create_celery_app(
    get_settings(),
    include=[
        "services.render.tasks",
        "services.render.batch",
        "services.feed.tasks",
        "services.deliver.tasks",
    ],
)

# Set by `bantin worker`: the queue this node serves (its role in logs and heartbeats).
ROLE = os.environ.get("BANTIN_WORKER_ROLE", "worker")


class _Node:
    """What the main process runs beside Celery: the metrics server and the heartbeat."""

    controller: Any = None
    port: int | None = None
    stop_server: Callable[[], None] | None = None
    heartbeat: Heartbeat | None = None


def _enable_metrics(**_: Any) -> None:
    # A worker starting, about to import the task modules, which create the metrics: first
    # one summed registry for the whole pool (`bantin worker` has made it already; a plain
    # `celery -A ... worker` has not). Sent only where tasks are loaded (worker, beat,
    # report, shell), never by `celery inspect`.
    if not multiprocess_mode():
        enable_multiprocess()
    from shared import worker_metrics  # creates the metrics: multiprocess mode first

    worker_metrics.connect_task_signals()


import_modules.connect(_enable_metrics, sender=app, weak=False)


@setup_logging.connect(weak=False)
def _setup_logging(**_: Any) -> None:
    # Connected, so Celery installs no handler of its own; its banner is printed to stdout.
    configure_logging(get_settings(), ROLE)
    # Celery's two INFO lines per task ("received", "succeeded") repeat what every task logs
    # itself (a render's "published", a build's listing), and cost the worker (and `bantin
    # up`, which relays them) real CPU: 400 lines a second at 200 bulletins/s, 200 per feed
    # change for 100 WebSub subscribers. Failures are still logged (ERROR).
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect(weak=False)
def _start_metrics(sender: Any = None, **_: Any) -> None:
    _Node.controller = sender
    settings = get_settings()
    if settings.metrics_port is None:
        return
    from shared.metrics import serve

    _Node.port, _Node.stop_server = serve(settings.metrics_host, settings.metrics_port)
    log.info("metrics on %s", metrics_url(settings.metrics_host, _Node.port))


def _pool_pids() -> list[int] | None:
    """The pool's process ids; None when unknown (no pool yet, or one being restarted)."""
    pool = getattr(_Node.controller, "pool", None)
    try:
        pids = sorted(int(pid) for pid in pool.info.get("processes", [])) if pool else []
    except (AttributeError, TypeError):  # a pool being restarted, or not a prefork pool
        return None
    return pids or None


def _info() -> dict[str, Any]:
    pids = _pool_pids()
    # Drop the live gauges of pool processes Celery replaced; but never on an unknown pool,
    # which would read as every live pool process gone.
    if pids is not None:
        mark_dead_processes({os.getpid(), *pids})
    return {
        "queue": ROLE,
        "concurrency": getattr(_Node.controller, "concurrency", None),
        "pool_pids": pids or [],
    }


@worker_ready.connect(weak=False)
def _start_heartbeat(**_: Any) -> None:
    settings = get_settings()
    redis = Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    url = metrics_url(get_settings().metrics_host, _Node.port) if _Node.port is not None else None
    _Node.heartbeat = Heartbeat(redis, new_beat(ROLE, url), _info).start()


@worker_shutdown.connect(weak=False)
def _stop(**_: Any) -> None:
    if _Node.heartbeat is not None:
        _Node.heartbeat.stop()
    if _Node.stop_server is not None:
        _Node.stop_server()
