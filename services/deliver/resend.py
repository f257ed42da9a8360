"""Re-send WebSub deliveries, fan-outs and verifications whose messages were lost (a Redis
restart, a purged queue), and purge subscriptions long ended. The reconciler calls
`resend_overdue` on each pass.

A killed worker's task comes back by itself (acks late); a message Redis lost does not:
- a delivery: each fan-out records in the database what it owes each subscriber
  (`owed_since`), so what is overdue is found here and queued again;
- a fan-out (services/deliver/fanout.py): the feed build records the fingerprint it wrote
  (shared/refresh.py's `built`, in Redis) after sending it, so a listing whose subscribers
  are owed something else than what was last built, for longer than `owed_for`, lost its
  fan-out, which is done again here. (Redis lost `built` too: the reconciler rebuilds the
  feed, and the rebuild fans out.) A build that dies between its fan-out and recording `built`
  can make this repair owe the older fingerprint for a while: the subscriber then gets the
  current feed once more later, a duplicate, never a loss;
- a verification: the request's token stays set until it is settled.
So deliveries are at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache

from celery import Celery
from redis import Redis, RedisError
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.deliver.fanout import fan_out
from services.deliver.subscriptions import overdue, unverified
from services.deliver.tasks import BACKOFF_CAP, REQUEST_DEADLINE_SECONDS
from services.deliver.topics import parse_topic
from shared.celery_app import DELIVER_CONTENT, DELIVER_QUEUE, VERIFY_INTENT
from shared.models import Subscription, SubscriptionState, utcnow
from shared.queues import queue_depths
from shared.refresh import Job, Refresher
from shared.settings import Settings, get_settings
from shared.site import Listing

log = logging.getLogger(__name__)

# No attempt for this long means no retry is pending: longer than the longest backoff plus
# one attempt (its deadline), with margin.
QUIET = timedelta(seconds=BACKOFF_CAP + 2 * REQUEST_DEADLINE_SECONDS + 30)
# A verification's retries (2 + 4 + 8 s at most, plus deadlines) are over well within this.
VERIFY_QUIET = timedelta(minutes=2)
# Ended subscriptions are few and old: one purge an hour per reconciler is plenty.
PURGE_EVERY_SECONDS = 3600.0

Built = Callable[[Listing], str | None]


class FanoutWatch:
    """Since when each (listing target, built fingerprint) mismatch has been seen, so only
    one that lasts is repaired: a fan-out normally lands within milliseconds of the build."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}

    def due(
        self, mismatches: set[tuple[str, str]], now: datetime, wait: timedelta
    ) -> list[tuple[str, str]]:
        self.seen = {key: self.seen.get(key, now) for key in mismatches}
        return sorted(key for key, since in self.seen.items() if now - since >= wait)


_watch = FanoutWatch()  # the reconciler is one process
_next_purge = 0.0  # time.monotonic() of the next purge


def resend_overdue(
    sessions: sessionmaker[Session],
    celery: Celery,
    owed_for: timedelta,
    now: datetime | None = None,
    *,
    settings: Settings | None = None,
    built: Built | None = None,
) -> int:
    """Queue again every delivery owed for over `owed_for` with no attempt in sight, every
    fan-out lost for over `owed_for`, and every verification lost; how many. Purges ended
    subscriptions now and then. The reconciler calls it each pass with
    `BANTIN_REQUEUE_AFTER_SECONDS`. `settings` and `built` default to the process's own (the
    environment, and the feed builds recorded in its Redis)."""
    now = now or utcnow()
    settings = settings or get_settings()
    with sessions() as session:
        found = overdue(session, owed_for, QUIET, now)
        checks = unverified(session, VERIFY_QUIET, now)
        session.commit()
    for subscription_id, fingerprint in found:
        celery.send_task(DELIVER_CONTENT, args=[subscription_id, fingerprint])
    for subscription_id, token in checks:
        celery.send_task(VERIFY_INTENT, args=[subscription_id, token])
    repaired = repair_fanouts(
        sessions, celery, settings.public_url, built or _built_in_redis(settings, celery),
        owed_for, now, backlog=None if built else _backlog_in_redis(settings),
    )  # fmt: skip
    _purge_now_and_then(sessions, settings.hub_purge_days, now)
    return len(found) + len(checks) + repaired


def lost_fanouts(
    session: Session, public_url: str, built: Built, now: datetime
) -> set[tuple[str, str]]:
    """(listing target, last built fingerprint) of every listing with a live subscriber owed
    another fingerprint than the one its feeds were last built with. One row per distinct
    (topic, owed fingerprint), not per subscriber; one `built` look-up per listing."""
    rows = session.execute(
        select(Subscription.topic, Subscription.wanted_fingerprint)
        .where(
            Subscription.state == SubscriptionState.ACTIVE,
            Subscription.expires_at > now,
            Subscription.wanted_fingerprint.is_not(None),
        )
        .distinct()
    ).all()
    last_built: dict[str, str | None] = {}
    found: set[tuple[str, str]] = set()
    for topic, wanted in rows:
        parsed = parse_topic(public_url, topic)
        if parsed is None:
            continue  # not a feed here (the public URL changed): deliveries fail it
        target = parsed[0].target
        if target not in last_built:
            last_built[target] = built(parsed[0])
        have = last_built[target]
        # None: never built, or Redis lost it; the reconciler's verification rebuilds it.
        if have is not None and have != wanted:
            found.add((target, have))
    return found


def repair_fanouts(
    sessions: sessionmaker[Session],
    celery: Celery,
    public_url: str,
    built: Built,
    owed_for: timedelta,
    now: datetime,
    watch: FanoutWatch = _watch,
    backlog: Callable[[], int] | None = None,
) -> int:
    """Fan out again each listing whose mismatch (`lost_fanouts`) has lasted `owed_for`, if
    `backlog()` (messages waiting on the deliver queue) is 0; how many deliveries that
    queued."""
    with sessions() as session:
        mismatches = lost_fanouts(session, public_url, built, now)
    due = watch.due(mismatches, now, owed_for)
    if due and backlog is not None and backlog() > 0:
        # A fan-out may just be waiting behind other deliveries: re-doing it now would owe
        # every subscriber again and, under load, feed the backlog. Once the queue is empty
        # a mismatch that lasted is certain to be a lost message.
        return 0
    queued = 0
    for target, fingerprint in due:
        count = fan_out(sessions, celery, public_url, Listing.from_target(target), fingerprint)
        log.warning("hub: fan-out of %s (%s) was lost: %d deliveries queued again",
                    target, fingerprint[:12], count)  # fmt: skip
        watch.seen.pop((target, fingerprint), None)
        queued += count
    return queued


@cache
def _redis(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _built_in_redis(settings: Settings, celery: Celery) -> Built:
    """What the feed builds recorded (None when Redis cannot say: nothing is repaired)."""

    def built(listing: Listing) -> str | None:
        try:
            return Refresher(_redis(settings.broker_url), celery).built(Job.FEED, listing)
        except (RedisError, RuntimeError) as exc:  # RuntimeError: no Redis configured
            log.debug("hub: cannot read the feed build of %s: %s", listing.target, exc)
            return None

    return built


def _backlog_in_redis(settings: Settings) -> Callable[[], int]:
    """Messages waiting on the deliver queue (0 when Redis cannot say)."""

    def backlog() -> int:
        try:
            return queue_depths(_redis(settings.broker_url), (DELIVER_QUEUE,))[DELIVER_QUEUE]
        except (RedisError, RuntimeError):
            return 0

    return backlog


def purge_ended(session: Session, days: int, now: datetime | None = None) -> int:
    """Delete subscriptions that ended over `days` ago (unsubscribed or denied, by when they
    last changed; active ones by their lease's end), unless a request of theirs awaits its
    verification; how many. The caller commits."""
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    ended = or_(
        and_(
            Subscription.state.in_((SubscriptionState.UNSUBSCRIBED, SubscriptionState.DENIED)),
            Subscription.updated_at < cutoff,
        ),
        and_(Subscription.state == SubscriptionState.ACTIVE, Subscription.expires_at < cutoff),
    )
    result = session.execute(
        delete(Subscription)
        .where(ended, Subscription.token.is_(None))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _purge_now_and_then(sessions: sessionmaker[Session], days: int, now: datetime) -> None:
    global _next_purge
    if time.monotonic() < _next_purge:
        return
    _next_purge = time.monotonic() + PURGE_EVERY_SECONDS
    with sessions() as session:
        purged = purge_ended(session, days, now)
        session.commit()
    if purged:
        log.info("hub: purged %d subscription(s) ended over %d days ago", purged, days)
