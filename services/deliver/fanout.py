"""Fan-out: a listing's feeds changed, so every live subscriber of them is owed the new content."""

from __future__ import annotations

from services.deliver.subscriptions import owe_deliveries
from services.deliver.topics import topics_of
from shared.celery_app import DELIVER_CONTENT
from shared.db import session_factory
from shared.runtime import Runtime
from shared.site import Listing


def notify_subscribers(runtime: Runtime, listing: Listing, shown: str) -> int:
    """Record `shown` as owed to every live subscriber of the listing's feeds and queue a
    delivery task for each (queue `deliver`); how many.

    The owed fingerprint is in the database before any message is sent, so a message lost
    (a Redis restart, a killed worker) leaves a difference the reconciler can find and send
    again. A subscriber that already has this content skips its task.
    """
    settings = runtime.settings
    topics = list(topics_of(settings.public_url, listing).values())
    with session_factory(settings)() as session:
        ids = owe_deliveries(session, topics, shown)
        session.commit()
    for subscription_id in ids:
        runtime.refresher.celery.send_task(DELIVER_CONTENT, args=[subscription_id, shown])
    return len(ids)
