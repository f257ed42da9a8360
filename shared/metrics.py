"""Prometheus metrics for every Bantin process, with prometheus-client.

Processes that fork workers (Celery's prefork pool, uvicorn --workers) run in the client's
multiprocess mode: PROMETHEUS_MULTIPROC_DIR names an empty directory, set before the first
metric is created; each process writes its samples there and the /metrics of the parent (or
of any uvicorn worker) sums them. Single processes use the default registry.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
    values,
)

from shared.settings import local_url

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition_registry() -> CollectorRegistry:
    """The registry /metrics should serve: every process's samples in multiprocess mode."""
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def exposition() -> tuple[bytes, str]:
    """(body, content type) of a /metrics answer in the text format Prometheus scrapes."""
    return generate_latest(exposition_registry()), CONTENT_TYPE_LATEST


def enable_multiprocess(parent: str | None = None) -> str:
    """Point this process (and every process it forks) at a fresh, empty multiprocess
    directory; returns it. Must run before the first metric is created.

    A fresh directory per start, never a shared one: files left by an earlier run (or by a
    replica sharing a volume) would be summed into this one's counters. The directory is
    made inside `parent`, else inside PROMETHEUS_MULTIPROC_DIR if the operator set one (a
    tmpfs, say), else in the system's temporary directory; it is removed at exit.
    """
    base = parent or os.environ.get(MULTIPROC_ENV) or None
    if base:
        os.makedirs(base, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="bantin-metrics-", dir=base)
    os.environ[MULTIPROC_ENV] = directory
    # prometheus-client picks its value class (memory or mmap files) when first imported,
    # which may have happened before the variable was set: pick again.
    values.ValueClass = values.get_value_class()
    owner = os.getpid()

    def _remove() -> None:
        if os.getpid() == owner:  # forked pool processes must not remove it under the parent
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(_remove)
    return directory


def mark_dead_processes(alive: set[int]) -> None:
    """Drop the live-gauge files of processes not in `alive` (exited pool processes), so a
    `livesum` gauge stops counting them. Counters and histograms keep their files: what a dead
    process counted stays counted."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        if pid not in alive:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def serve(
    host: str, port: int, registry: CollectorRegistry | None = None
) -> tuple[int, Callable[[], None]]:
    """Serve /metrics on host:port (port 0: any free port) from a daemon thread; returns the
    port bound and a function that stops the server."""
    server, thread = start_http_server(port, host, registry=registry or exposition_registry())

    def _stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return int(server.server_port), _stop


def metrics_url(host: str, port: int) -> str:
    """How `bantin status` (or, for a wildcard host, another machine) reaches this process's
    /metrics."""
    if host not in ("0.0.0.0", "::", ""):
        return local_url(host, port) + "/metrics"
    host = socket.gethostname()
    try:
        socket.gethostbyname(host)
    except OSError:
        host = "127.0.0.1"  # a hostname nothing resolves: say what works here, at least
    return f"http://{host}:{port}/metrics"
