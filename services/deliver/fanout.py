"""Fan-out: a listing's feeds changed, so every live subscriber of them is owed the new content.

The feed worker's part costs the same whatever the number of subscribers: one indexed look-up
(does the listing have any live subscriber?) and one `deliver.fanout` message naming the
listing and the fingerprint of what it just wrote. The deliver worker then records the
fingerprint as owed to each subscriber and queues one delivery task per subscriber.

A lost fan-out message (a Redis restart, a purge) is repaired by the reconciler
(services/deliver/resend.py): the feed build records its fingerprint (shared/refresh.py's
`built`) after sending the message, so a listing whose built fingerprint differs, for long,
from what its subscribers were owed has lost its fan-out, which is then done again. A Redis
restart that also lost `built` makes the reconciler rebuild the feed, which fans out again.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.deliver.subscriptions import owe_deliveries
from services.deliver.topics import topics_of
from shared.celery_app import DELIVER_CONTENT, DELIVER_FANOUT
from shared.db import session_factory
from shared.models import Subscription, SubscriptionState, utcnow
from shared.runtime import Runtime
from shared.site import Listing


def notify_subscribers(runtime: Runtime, listing: Listing, shown: str) -> int:
    """Queue one fan-out task (queue `deliver`) for the listing's new content `shown`, if any
    subscriber is live; how many messages were sent (0 or 1). Called by the feed build after
    it wrote the feeds."""
    settings = runtime.settings
    topics = list(topics_of(settings.public_url, listing).values())
    with session_factory(settings)() as session:
        if not has_live_subscriber(session, topics):
            return 0  # most listings: no message, no deliver-worker work
    runtime.refresher.celery.send_task(DELIVER_FANOUT, args=[listing.target, shown])
    return 1


def has_live_subscriber(session: Session, topics: Sequence[str]) -> bool:
    """One row at most, through the (topic, state) index."""
    found = session.scalar(
        select(Subscription.id)
        .where(
            Subscription.topic.in_(topics),
            Subscription.state == SubscriptionState.ACTIVE,
            Subscription.expires_at > utcnow(),
        )
        .limit(1)
    )
    return found is not None


def fan_out(
    sessions: sessionmaker[Session], celery: Celery, public_url: str, listing: Listing, shown: str
) -> int:
    """Record `shown` as owed to every live subscriber of the listing's feeds, then queue a
    delivery task for each that was owed nothing before; how many.
    Run by the deliver worker (and by the reconciler's repair). The owed fingerprint is
    committed before any delivery message is sent, so a lost delivery message leaves a
    difference the reconciler re-sends (`overdue`)."""
    topics = list(topics_of(public_url, listing).values())
    now = utcnow()
    with sessions() as session:
        owe_deliveries(session, topics, shown, now)
        # Only subscribers owed nothing before this change get a task: one that was owed
        # already has a delivery queued, under way or retrying, which sends the feed as it is
        # when it runs (and follows up if a change comes during the send); a lost one is
        # re-sent by the reconciler (`overdue`). So a subscriber gets one task per delivery
        # round, not one per feed build: under load, most builds queue nothing. Read in the
        # transaction that wrote `owed_since = now`, so no one else's write interleaves.
        ids = list(
            session.scalars(
                select(Subscription.id)
                .where(
                    Subscription.topic.in_(topics),
                    Subscription.state == SubscriptionState.ACTIVE,
                    Subscription.owed_since == now,
                )
                .order_by(Subscription.id)
            )
        )
        session.commit()
    if not ids:
        return 0
    # One broker connection for the whole batch, not one checkout per message.
    with celery.producer_or_acquire() as producer:
        for subscription_id in ids:
            celery.send_task(DELIVER_CONTENT, args=[subscription_id, shown], producer=producer)
    return len(ids)
