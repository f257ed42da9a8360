"""How much work waits on each queue, and for how long: what `bantin status`, the metrics and
an autoscaler read.

Depth is what waits in Redis for a worker to take it. Kombu's Redis transport keeps a queue
as a list named after it, plus one list per priority step (`render\\x06\\x163`, …) when
messages carry priorities; it counts a queue's size as the sum of those lists (its
`Channel._size`), and so do we. Messages a worker has taken but not yet acknowledged sit in
Kombu's `unacked` hash, not in these lists: they are being worked on, not waiting.

Oldest age is the age of the oldest piece of work owed, whichever message (if any) carries it:
- render: the oldest render owed in the database, measured from when it became owed: the
  later of the row's `updated_at` (its current revision accepted) and `published_at` (an
  embargo released), among rows whose render is owed (`pending_since` set; its index finds
  them) and not embargoed; and the oldest listing page build requested and not yet started
  (shared/refresh.py's `since`). The database, not the queue, is the truth: a message Redis
  lost still counts as owed. Not `pending_since` itself: the reconciler restarts that clock
  each time it re-sends a render, which would cap the age at `requeue_after_seconds` and hide
  a backlog no worker consumes. One caveat: a render owed again by `retry-failed` or by a page
  repair counts from its revision's acceptance, so it reads old until a worker renders it.
- feed: the oldest feed build requested and not yet started (shared/refresh.py's `since`).
  Feed messages carry a listing, not a bulletin, and many requests coalesce into one build,
  so the request times are the only honest measure of how long a feed has been waiting.
- deliver: the oldest WebSub work owed in the database and not yet attempted: a delivery owed
  to a live subscriber (`owed_since`) with no attempt since, or a subscription request
  awaiting its verification (`updated_at` of a row with a `token`). A subscriber whose
  delivery failed and is being retried is the subscriber's problem, not a backlog: it does not
  count. The reconciler restarts both clocks when it re-sends lost work, so the age is capped
  near `requeue_after_seconds` (deliveries) or two minutes (verifications) for work nobody
  consumes; the depth still grows then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import case, func, or_, select

from shared.celery_app import DELIVER_QUEUE, FEED_QUEUE, RENDER_QUEUE
from shared.db import session_factory
from shared.models import Bulletin, BulletinStatus, Subscription, SubscriptionState, utcnow
from shared.refresh import Job, owed_since
from shared.settings import Settings

# Kombu's Redis transport: separator and steps of its per-priority lists (kombu.transport.redis
# Channel.sep and PRIORITY_STEPS); step 0 is the bare queue name.
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(frozen=True)
class QueueStats:
    queue: str  # RENDER_QUEUE, FEED_QUEUE or DELIVER_QUEUE
    depth: int  # messages waiting in Redis for a worker
    oldest_age_seconds: float | None  # age of the oldest work owed on this queue; None: none


def queue_lists(queue: str) -> list[str]:
    """The Redis lists Kombu keeps a queue's waiting messages in."""
    return [queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}"
            for step in KOMBU_PRIORITY_STEPS]  # fmt: skip


def queue_depths(
    redis: Redis, queues: tuple[str, ...] = (RENDER_QUEUE, FEED_QUEUE, DELIVER_QUEUE)
) -> dict[str, int]:
    """Messages waiting per queue, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        for name in queue_lists(queue):
            pipe.llen(name)
    sizes = pipe.execute()
    steps = len(KOMBU_PRIORITY_STEPS)
    return {
        q: sum(int(n) for n in sizes[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)
    }


def oldest_render_owed(settings: Settings) -> float | None:
    """Unix time the oldest render owed in the database became owed (None: none is owed)."""
    # max(updated_at, published_at), portably (SQLite has no GREATEST).
    owed_from = case(
        (Bulletin.published_at > Bulletin.updated_at, Bulletin.published_at),
        else_=Bulletin.updated_at,
    )
    with session_factory(settings)() as session:
        oldest = session.scalar(
            select(func.min(owed_from)).where(
                Bulletin.pending_since.is_not(None), Bulletin.status != BulletinStatus.SCHEDULED
            )
        )
    return None if oldest is None else oldest.timestamp()


def oldest_delivery_owed(settings: Settings) -> float | None:
    """Unix time of the oldest WebSub delivery or verification owed (None: none is)."""
    with session_factory(settings)() as session:
        delivery = session.scalar(
            select(func.min(Subscription.owed_since)).where(
                Subscription.state == SubscriptionState.ACTIVE,
                Subscription.expires_at > utcnow(),
                or_(
                    Subscription.last_delivery_at.is_(None),
                    Subscription.last_delivery_at < Subscription.owed_since,
                ),
            )
        )
        verification = session.scalar(
            select(func.min(Subscription.updated_at)).where(Subscription.token.is_not(None))
        )
    times = [t.timestamp() for t in (delivery, verification) if t is not None]
    return min(times) if times else None


def _age(now: float, *since: float | None) -> float | None:
    times = [t for t in since if t is not None]
    return max(0.0, now - min(times)) if times else None


def queue_stats(settings: Settings, redis: Redis) -> list[QueueStats]:
    """One entry per queue (render, feed, deliver). Raises RedisError / SQLAlchemyError when a
    backend is unreachable."""
    depths = queue_depths(redis)
    render_since = oldest_render_owed(settings), owed_since(redis, Job.PAGE)
    feed_since = owed_since(redis, Job.FEED)
    deliver_since = oldest_delivery_owed(settings)
    now = time.time()
    return [
        QueueStats(RENDER_QUEUE, depths[RENDER_QUEUE], _age(now, *render_since)),
        QueueStats(FEED_QUEUE, depths[FEED_QUEUE], _age(now, feed_since)),
        QueueStats(DELIVER_QUEUE, depths[DELIVER_QUEUE], _age(now, deliver_since)),
    ]
