"""How much work waits on each queue, and for how long: what `bantin status`, the metrics and
an autoscaler read.

Stub with the agreed interface; the observability work fills in the implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from shared.celery_app import FEED_QUEUE, RENDER_QUEUE
from shared.settings import Settings


@dataclass(frozen=True)
class QueueStats:
    queue: str  # RENDER_QUEUE or FEED_QUEUE
    depth: int  # messages waiting in Redis for a worker
    oldest_age_seconds: float | None  # age of the oldest work owed on this queue; None: none


def queue_stats(settings: Settings, redis: Redis) -> list[QueueStats]:
    """One entry per queue (render, feed). Raises RedisError / SQLAlchemyError when a
    backend is unreachable."""
    return [QueueStats(queue, int(redis.llen(queue)), None) for queue in (RENDER_QUEUE, FEED_QUEUE)]
