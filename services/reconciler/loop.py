"""The reconciler: the database is the truth, Redis only a fast path. Every few seconds it
re-sends what Redis lost (a restart, a message popped by a worker that then died) and
restarts listing rebuilds whose trigger or builder was lost."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from sqlalchemy import select, update

from shared.celery_app import RENDER_BULLETIN
from shared.db import session_scope
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import ALL

log = logging.getLogger(__name__)
BATCH = 500


def requeue_stale(runtime: Runtime) -> int:
    """Re-send every bulletin still queued after `requeue_after_seconds`; returns how many."""
    settings = runtime.settings
    cutoff = utcnow() - timedelta(seconds=settings.requeue_after_seconds)
    with session_scope(settings) as session:
        stale = session.execute(
            select(Bulletin.id, Bulletin.revision)
            .where(Bulletin.status == BulletinStatus.QUEUED, Bulletin.queued_at < cutoff)
            .order_by(Bulletin.queued_at)
            .limit(BATCH)
        ).all()
        for bulletin_id, revision in stale:
            runtime.refresher.celery.send_task(RENDER_BULLETIN, args=[bulletin_id, revision])
        if stale:
            # Restart the clock so a slow render is not sent again on every pass.
            session.execute(
                update(Bulletin)
                .where(Bulletin.id.in_([row.id for row in stale]))
                .values(queued_at=utcnow())
            )
    return len(stale)


def restart_stuck_builds(runtime: Runtime) -> int:
    kicked = 0
    for job, listing in runtime.refresher.pending():
        kicked += runtime.refresher.kick(job, listing)
    return kicked


def request_site_listings(runtime: Runtime) -> None:
    """So `/` and the site-wide feeds exist from the start, before any bulletin arrives."""
    for job in Job:
        runtime.refresher.request(job, ALL)


def reconcile_once(runtime: Runtime) -> tuple[int, int]:
    return requeue_stale(runtime), restart_stuck_builds(runtime)


def run_forever(runtime: Runtime) -> None:
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    interval = runtime.settings.reconcile_interval_seconds
    log.info("reconciler running every %.1f s", interval)
    first_pass = True
    while not stop.is_set():
        try:
            if first_pass:
                request_site_listings(runtime)
                first_pass = False
            requeued, kicked = reconcile_once(runtime)
            if requeued or kicked:
                log.info("re-sent %d bulletins, restarted %d listing builds", requeued, kicked)
        except Exception:
            # Redis or the database is down: say so, and try again next round.
            log.warning("reconcile pass failed", exc_info=True)
        stop.wait(interval)
