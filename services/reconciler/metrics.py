"""Metrics of the reconciler, and the queue depth and oldest age of every queue.

The queue gauges are computed at scrape time (one pipelined LLEN per Kombu list, one indexed
MIN in the database) by a collector that only the reconciler's /metrics serves. The
reconciler is a singleton, so each queue has exactly one series in the whole deployment;
served by every worker (or ingest process) the same global number would appear once per
replica and a `sum()` in a dashboard or an autoscaler (KEDA) would multiply it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis

from shared.queues import queue_stats
from shared.settings import Settings

log = logging.getLogger(__name__)

PASSES = Counter(
    "bantin_reconciler_passes",
    "Reconciler passes by outcome (ok, error: the database or Redis was unreachable).",
    ["outcome"],
)
PASS_DURATION = Histogram(
    "bantin_reconciler_pass_duration_seconds",
    "Time one reconciler pass took (verifying passes included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ACTIONS = Counter(
    "bantin_reconciler_actions",
    "What the reconciler did: released (embargoes lifted), requeued (renders re-sent), "
    "restarted (listing builds restarted), stale (listings rebuilt after verification), "
    "repaired (bulletins whose page disagreed with their status).",
    ["action"],
)
LAST_PASS = Gauge(
    "bantin_reconciler_last_pass_timestamp_seconds", "Unix time the last pass finished."
)


class QueueCollector(Collector):
    """bantin_queue_depth and bantin_queue_oldest_age_seconds per queue, read at scrape time.

    When Redis or the database cannot be read, the scrape still succeeds with
    bantin_queue_stats_up 0 and no queue series (rather than stale or made-up numbers)."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings, self.redis = settings, redis

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "bantin_queue_depth",
            "Messages waiting in Redis for a worker, by queue.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "bantin_queue_oldest_age_seconds",
            "Age of the oldest work owed on a queue (0: none); see shared/queues.py.",
            labels=["queue"],
        )
        up = GaugeMetricFamily(
            "bantin_queue_stats_up", "1 if the queue statistics could be read at this scrape."
        )
        try:
            stats = queue_stats(self.settings, self.redis)
        except Exception as exc:  # Redis or the database is down: say so in the scrape
            log.warning("queue statistics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        for entry in stats:
            depth.add_metric([entry.queue], entry.depth)
            age.add_metric([entry.queue], entry.oldest_age_seconds or 0.0)
        up.add_metric([], 1)
        yield from (depth, age, up)
