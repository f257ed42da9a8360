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
DIR_PREFIX = "bantin-metrics-"  # + the pid of the process that made it


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
    """Point this process (and every process it forks) at an empty multiprocess directory
    named after its pid, `bantin-metrics-<pid>`; returns it. Must run before the first metric
    is created; a second call in the same process returns the same directory.

    Empty at every start, never shared: files left by an earlier run would be summed into
    this one's counters, so a directory left with this pid (a killed process's, the pid
    reused) is emptied, and those of other dead pids are removed. The directory is made
    inside `parent`, else inside PROMETHEUS_MULTIPROC_DIR if the operator set one (a tmpfs,
    say; one per host, as pids are), else in the system's temporary directory; it is removed
    at exit.
    """
    own = f"{DIR_PREFIX}{os.getpid()}"
    current = os.environ.get(MULTIPROC_ENV) or None
    if current and _dir_pid(os.path.basename(current)) is not None:
        if os.path.basename(current) == own and parent in (None, os.path.dirname(current)):
            return current  # already on in this process
        current = os.path.dirname(current)  # another bantin process's: make ours beside it
    base = parent or current or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    remove_stale_dirs(base)
    directory = os.path.join(base, own)
    shutil.rmtree(directory, ignore_errors=True)
    os.mkdir(directory, 0o700)
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


def _dir_pid(name: str) -> int | None:
    """The pid in a `bantin-metrics-<pid>` directory name (None: not such a name)."""
    digits = name.removeprefix(DIR_PREFIX)
    return int(digits) if name != digits and digits.isascii() and digits.isdigit() else None


def process_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives address process groups, never one process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


def remove_stale_dirs(base: str) -> list[str]:
    """Remove the `bantin-metrics-<pid>` directories in `base` whose process is gone (a
    killed worker's, which no atexit removed); returns them."""
    removed = []
    for name in os.listdir(base):
        pid = _dir_pid(name)
        if pid is not None and pid != os.getpid() and not process_alive(pid):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            removed.append(name)
    return removed


def mark_dead_processes(alive: set[int]) -> None:
    """Drop the live-gauge files of processes not in `alive` (exited pool processes), so a
    `livesum` gauge stops counting them. A process still running keeps its files whatever
    `alive` says. Counters and histograms keep their files: what a dead process counted stays
    counted."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        try:
            pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        except ValueError:
            continue
        if pid not in alive and not process_alive(pid):
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
