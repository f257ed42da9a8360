"""Metrics of the render and feed workers: tasks, publishes, listing and feed builds.

Celery's prefork pool runs tasks in child processes, so these use prometheus-client's
multiprocess mode (a starting worker calls shared.metrics.enable_multiprocess before anything
creates a metric, and before the pool forks: see services/cli/worker.py): each pool process
writes its samples to mmap files, and one HTTP server in the worker's main process serves
their sum. We chose it over one exporter per pool process because a worker node then is one
scrape target on one known port (9100 in compose, found by DNS for every replica), pool
processes replaced by Celery keep their counts (a dead process's file stays and is still
summed), and Prometheus needs no discovery of short-lived per-process ports. The cost is an
mmap write per sample (~1 µs).

Import this module only after multiprocess mode is on (it creates the metrics at import).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import Task
from prometheus_client import Counter, Gauge, Histogram

from shared.logs import bulletin_fields
from shared.models import Bulletin, utcnow
from shared.refresh import Job
from shared.site import Listing

# Seconds. Renders take 1-2 ms and publishes ~20-50 ms end to end; a backlog lags seconds.
TASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PUBLISH_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BUILD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

TASKS = Counter(
    "bantin_tasks",
    "Celery task runs by queue, task name and outcome (success, failure, retry).",
    ["queue", "task", "outcome"],
)
TASK_DURATION = Histogram(
    "bantin_task_duration_seconds",
    "Time a Celery task ran, by queue and task name (every outcome).",
    ["queue", "task"],
    buckets=TASK_BUCKETS,
)
TASKS_ACTIVE = Gauge(
    "bantin_tasks_active",
    "Tasks running now, by queue.",
    ["queue"],
    multiprocess_mode="livesum",
)
PUBLISHED = Counter(
    "bantin_bulletins_published",
    "Revisions of bulletins whose article page went live (first publishes and corrections).",
)
WITHDRAWN = Counter(
    "bantin_bulletins_withdrawn", "Withdrawn bulletins whose page was taken down (410 notice)."
)
FAILED = Counter(
    "bantin_bulletins_failed",
    "Revisions given up on after the maximum render attempts (status failed).",
)
PUBLISH_LATENCY = Histogram(
    "bantin_publish_latency_seconds",
    "From a revision's acceptance (or its embargo's end) to its page being written.",
    buckets=PUBLISH_BUCKETS,
)
BUILDS = Counter(
    "bantin_listing_builds",
    "Listing builds by job (page: an index page, feed: its RSS and Atom feeds), listing kind "
    "(all, agency, category) and outcome (success, failure).",
    ["job", "kind", "outcome"],
)
BUILD_DURATION = Histogram(
    "bantin_listing_build_duration_seconds",
    "Time a listing build took, by job and listing kind.",
    ["job", "kind"],
    buckets=BUILD_BUCKETS,
)

# Celery task name -> its queue: the routes send "render.*" to render, "feed.*" to feed.
_started: dict[str, float] = {}  # task id -> perf_counter at prerun, in this pool process


def _queue(task: Task) -> str:
    delivery = getattr(task.request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or task.name.partition(".")[0])


def on_task_prerun(task_id: str, task: Task, **_: Any) -> None:
    _started[task_id] = time.perf_counter()
    TASKS_ACTIVE.labels(_queue(task)).inc()


def on_task_postrun(task_id: str, task: Task, state: str | None = None, **_: Any) -> None:
    queue = _queue(task)
    TASKS_ACTIVE.labels(queue).dec()
    started = _started.pop(task_id, None)
    if started is not None:
        TASK_DURATION.labels(queue, task.name).observe(time.perf_counter() - started)
    outcome = {"SUCCESS": "success", "RETRY": "retry"}.get(state or "", "failure")
    TASKS.labels(queue, task.name, outcome).inc()


def connect_task_signals() -> None:
    """Count every task this process runs (connect in the worker, before the pool forks)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(on_task_prerun, weak=False)
    task_postrun.connect(on_task_postrun, weak=False)


def observe_publish(accepted_at: datetime, due_at: datetime) -> None:
    """A page went live: its latency runs from the later of the revision's acceptance and
    its publication time (an embargoed bulletin is owed only from then)."""
    PUBLISHED.inc()
    PUBLISH_LATENCY.observe(max(0.0, (utcnow() - max(accepted_at, due_at)).total_seconds()))


def timed_build(job: Job, listing: Listing, build: Callable[[], str]) -> Callable[[], str]:
    """`build`, counted and timed as a listing build."""

    def run() -> str:
        started = time.perf_counter()
        try:
            built = build()
        except BaseException:
            BUILDS.labels(job.value, listing.kind.value, "failure").inc()
            raise
        BUILD_DURATION.labels(job.value, listing.kind.value).observe(time.perf_counter() - started)
        BUILDS.labels(job.value, listing.kind.value, "success").inc()
        return built

    return run


def log_build(
    logger: logging.Logger, message: str, listing: Listing, shown: list[Bulletin]
) -> None:
    """Log a listing build with the newest bulletin it shows (its id, agency, revision)."""
    newest = shown[0] if shown else None
    fields = bulletin_fields(newest.id, newest.agency.slug, newest.revision) if newest else {}
    logger.info("%s: %s, %d items", message, listing.target, len(shown),
                extra=fields | {"listing": listing.target})  # fmt: skip
