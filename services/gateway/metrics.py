"""The gateway's Prometheus metrics, counted at a cost its hot path can afford.

A cache hit costs the gateway ~30 µs of CPU; prometheus-client's own calls (a labelled
counter, a histogram, the cache counter) cost ~1.5 µs, and ~4 µs in multiprocess mode, where
each is a lock and an mmap write. So each request only adds to plain per-process tallies
(`Tally.record`, well under a microsecond), and the tallies are added to the real metrics at
most FLUSH_SECONDS later, and before every scrape this process answers. Under
`uvicorn --workers N` with PROMETHEUS_MULTIPROC_DIR, a scrape answered by one worker therefore
sees another worker's last second only once that worker has flushed it.

Routes are a small fixed set of kinds (`route_kind`), never raw paths: a crawler asking for
a million missing URLs must not make a million series.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import Counter, Histogram

FLUSH_SECONDS = 1.0
ROUTE_KINDS = ("article", "listing", "feed", "static", "health", "metrics", "other")
# Seconds. A cache hit is tens of microseconds; a first read of a large file, milliseconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class BulkHistogram(Histogram):
    """A Histogram that can take many observations at once, already sorted into buckets."""

    def observe_counts(self, counts: Sequence[int], total: float) -> None:
        """What `observe` would do for `counts[i]` observations in bucket i (the last one is
        +Inf) summing to `total`. prometheus-client has no public call for this: it writes
        the same per-bucket values `observe` does (tested against `observe` itself)."""
        self._raise_if_not_observable()
        if len(counts) != len(self._buckets):
            raise ValueError(f"{len(counts)} counts for {len(self._buckets)} buckets")
        self._sum.inc(total)
        for value, count in zip(self._buckets, counts, strict=True):
            if count:
                value.inc(count)


REQUESTS = Counter(
    "bantin_gateway_http_requests_total",
    'HTTP requests answered, by route kind and status code (304s: status="304").',
    ["route", "status"],
)
DURATION = BulkHistogram(
    "bantin_gateway_http_request_duration_seconds",
    "Time from the request's arrival to its last byte handed to the server, by route kind.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
CACHE = Counter(
    "bantin_gateway_cache_lookups_total",
    "File requests answered from the in-memory cache (hit) or after reading the disk (miss).",
    ["result"],
)
for _result in ("hit", "miss"):  # zeros from the start: rate() needs a first sample
    CACHE.labels(_result)


def route_kind(path: str) -> str:
    """The kind of URL (shared/site.py's layout), from its shape alone."""
    if path.startswith("/feeds/"):
        return "feed"
    if path.startswith("/static/"):
        return "static"
    if path.endswith(("/", "/index.html")):
        return "listing"
    if path.endswith(".html"):
        return "article"
    if path == "/healthz":
        return "health"
    if path == "/metrics":
        return "metrics"
    return "other"


_BUCKETS = len(LATENCY_BUCKETS) + 1  # and +Inf


def _empty() -> list[float]:
    return [0.0] * (_BUCKETS + 1)


class Tally:
    """This process's counts since the last flush. Used from the event loop thread only."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        # Per route kind: the bucket counts, then the sum of the seconds.
        self.latency = {kind: _empty() for kind in ROUTE_KINDS}
        self.hits = 0
        self.misses = 0
        self._flush_pending = False

    def record(self, kind: str, status: int, seconds: float) -> None:
        key = (kind, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        tally = self.latency[kind]
        tally[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # bucket `le` bound >= seconds
        tally[-1] += seconds
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add everything counted since the last flush to the metrics."""
        self._flush_pending = False
        requests, self.requests = self.requests, {}
        for (kind, status), count in requests.items():
            REQUESTS.labels(kind, str(status)).inc(count)
        for kind, tally in self.latency.items():
            if any(tally[:-1]):
                DURATION.labels(kind).observe_counts([int(n) for n in tally[:-1]], tally[-1])
                tally[:] = _empty()
        if self.hits:
            CACHE.labels("hit").inc(self.hits)
            self.hits = 0
        if self.misses:
            CACHE.labels("miss").inc(self.misses)
            self.misses = 0
