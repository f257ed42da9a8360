"""Per-agency rate limits, held in Redis so that every ingest process shares them.

The `limits` package does the counting: a moving window (exact: at most N hits in any window,
whatever the number of processes), one atomic Lua script per accepted request, so one Redis
round trip. A refused request costs one more, for the window stats behind `Retry-After`.

Fail safe: when Redis errs, requests pass unlimited (writes are refused with 503 by the
queue check anyway while Redis is down) and Redis is left alone for OUTAGE_PAUSE seconds, so a
dead Redis costs no timeout per request. Timestamps come from each process's clock: processes
on several machines need synchronised clocks (NTP), or the window drifts by their skew.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import limits
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Counter
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

OUTAGE_PAUSE = 1.0  # seconds without asking Redis after it failed
REDIS_TIMEOUT = 0.5  # a request must not hang on a dead Redis
KEY_PREFIX = "bantin:ratelimit"
WRITE, BATCH = "write", "batch"

REFUSALS = Counter(
    "bantin_rate_limit_refusals_total",
    "Requests refused with 429 for being over an agency's rate limit, by limit (write, batch).",
    ["limit"],
)
for _budget in (WRITE, BATCH):
    REFUSALS.labels(_budget)  # zeros from the start: rate() needs a first sample


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds (as `Retry-After` wants) until a slot frees
    limit: str = ""  # the limit that refused, e.g. "50 per 1 second"


ALLOWED = Verdict(True)


def storage_url(broker_url: str) -> str | None:
    """The `limits` storage URL for the broker: Redis as is (redis-py's `unix://` is the
    package's `redis+unix://`). None without Redis (Kombu's `memory://` of the unit tests:
    there is nothing to share limits in, so there are none)."""
    if broker_url.startswith("unix://"):
        return "redis+unix://" + broker_url.removeprefix("unix://")
    if broker_url.startswith(("redis://", "rediss://", "redis+unix://")):
        return broker_url
    return None


def _storage(url: str) -> Storage:
    if url == "memory://":  # one process only: for tests of the limiter itself
        return MemoryStorage()
    return RedisStorage(
        url,
        key_prefix=KEY_PREFIX,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
    )


class AgencyLimiter:
    """Budgets by name (`write`, `batch`), each one limit per agency."""

    def __init__(self, url: str, budgets: dict[str, str]) -> None:
        self._limiter = MovingWindowRateLimiter(_storage(url))
        self._items = {name: limits.parse(rate) for name, rate in budgets.items()}
        self._paused_until = 0.0

    def hit(self, budget: str, agency_id: int, cost: int = 1) -> Verdict:
        """Take `cost` from the agency's budget, or refuse with the time to wait. A cost above
        the whole budget is charged as the whole budget, so it can pass at all."""
        if time.monotonic() < self._paused_until:
            return ALLOWED
        item = self._items[budget]
        identity = (budget, str(agency_id))
        try:
            if self._limiter.hit(item, *identity, cost=min(cost, item.amount)):
                return ALLOWED
            stats = self._limiter.get_window_stats(item, *identity)
        except (RedisError, StorageError, OSError) as exc:
            self._paused_until = time.monotonic() + OUTAGE_PAUSE
            log.warning("rate limits unavailable, not enforced for %.0f s: %r", OUTAGE_PAUSE, exc)
            return ALLOWED
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        REFUSALS.labels(budget).inc()
        return Verdict(False, retry_after=wait, limit=str(item))
