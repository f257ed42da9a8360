"""Re-send WebSub deliveries and verifications whose messages were lost (a Redis restart, a
purged queue).

A killed worker's delivery comes back by itself (acks late); a message Redis lost does not.
Each feed build records in the database what it owes each subscriber (`owed_since`), so the
reconciler finds what is overdue here and queues it again: deliveries are at-least-once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from services.deliver.subscriptions import overdue, unverified
from services.deliver.tasks import BACKOFF_CAP, TIMEOUT
from shared.celery_app import DELIVER_CONTENT, VERIFY_INTENT

# No attempt for this long means no retry is pending: longer than the longest backoff plus
# one attempt's timeouts.
QUIET = timedelta(seconds=BACKOFF_CAP + 2 * float(TIMEOUT.read or 0) + 30)
# A verification's retries (2 + 4 + 8 s at most, plus timeouts) are over well within this.
VERIFY_QUIET = timedelta(minutes=2)


def resend_overdue(
    sessions: sessionmaker[Session],
    celery: Celery,
    owed_for: timedelta,
    now: datetime | None = None,
) -> int:
    """Queue again every delivery owed for over `owed_for` with no attempt in sight, and
    every verification lost; how many. The reconciler calls it each pass with
    `BANTIN_REQUEUE_AFTER_SECONDS`."""
    with sessions() as session:
        found = overdue(session, owed_for, QUIET, now)
        checks = unverified(session, VERIFY_QUIET, now)
        session.commit()
    for subscription_id, fingerprint in found:
        celery.send_task(DELIVER_CONTENT, args=[subscription_id, fingerprint])
    for subscription_id, token in checks:
        celery.send_task(VERIFY_INTENT, args=[subscription_id, token])
    return len(found) + len(checks)
