"""Prometheus metrics for every Bantin process, with prometheus-client.

Processes that fork workers (Celery's prefork pool, uvicorn --workers) run in the client's
multiprocess mode: PROMETHEUS_MULTIPROC_DIR names an empty directory, set before the first
metric is created; each process writes its samples there and the /metrics of the parent (or
of any uvicorn worker) sums them. Single processes use the default registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

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
