"""The reconciler: the database is the truth, Redis only the fast path.

Every `reconcile_interval_seconds` it releases embargoed bulletins whose time has come,
re-sends renders owed for longer than `requeue_after_seconds` (Redis restarted, a message went
down with a killed worker) and restarts listing builds whose builder died. Every
`verify_interval_seconds` it also checks each index page and feed against the database and
rebuilds the stale ones. Run exactly one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType

from sqlalchemy import select, update

from shared.celery_app import RENDER_BULLETIN
from shared.db import session_factory, session_scope
from shared.listings import all_listings, fingerprint, newest_versions
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime

log = logging.getLogger(__name__)
BATCH = 500


@dataclass
class Pass:
    released: int = 0  # embargoes lifted
    requeued: int = 0  # renders re-sent
    restarted: int = 0  # listing builds restarted
    stale: int = 0  # listings found stale by verification

    def __bool__(self) -> bool:
        return any((self.released, self.requeued, self.restarted, self.stale))


def _send_renders(runtime: Runtime, rows: list[tuple[int, int]]) -> None:
    for bulletin_id, revision in rows:
        runtime.refresher.celery.send_task(RENDER_BULLETIN, args=[bulletin_id, revision])


def release_embargoes(runtime: Runtime) -> int:
    """Scheduled bulletins whose published_at has come are queued for rendering."""
    now = utcnow()
    with session_scope(runtime.settings) as session:
        due = session.execute(
            select(Bulletin.id, Bulletin.revision)
            .where(Bulletin.status == BulletinStatus.SCHEDULED, Bulletin.published_at <= now)
            .limit(BATCH)
        ).all()
        if due:
            session.execute(
                update(Bulletin)
                .where(Bulletin.id.in_([row.id for row in due]),
                       Bulletin.status == BulletinStatus.SCHEDULED)
                .values(status=BulletinStatus.QUEUED, pending_since=now)
            )  # fmt: skip
    _send_renders(runtime, [(row.id, row.revision) for row in due])
    return len(due)


def requeue_stale(runtime: Runtime) -> int:
    """Re-send every render owed for longer than `requeue_after_seconds`."""
    settings = runtime.settings
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.requeue_after_seconds)
    with session_scope(settings) as session:
        stale = session.execute(
            select(Bulletin.id, Bulletin.revision)
            .where(Bulletin.pending_since < cutoff)
            .order_by(Bulletin.pending_since)
            .limit(BATCH)
        ).all()
        if stale:
            # Restart the clock so a slow render is not sent again on every pass.
            session.execute(
                update(Bulletin)
                .where(Bulletin.id.in_([row.id for row in stale]),
                       Bulletin.pending_since.is_not(None))
                .values(pending_since=now)
            )  # fmt: skip
    _send_renders(runtime, [(row.id, row.revision) for row in stale])
    return len(stale)


def retry_failed_bulletins(runtime: Runtime) -> int:
    """Give every failed bulletin a fresh set of attempts (the operator's `retry-failed`)."""
    now = utcnow()
    with session_scope(runtime.settings) as session:
        failed = session.execute(
            select(Bulletin.id, Bulletin.revision, Bulletin.rendered_revision).where(
                Bulletin.status == BulletinStatus.FAILED
            )
        ).all()
        for row in failed:
            session.execute(
                update(Bulletin)
                .where(Bulletin.id == row.id, Bulletin.status == BulletinStatus.FAILED)
                # A bulletin whose older revision is live stays listed while it re-renders.
                .values(status=BulletinStatus.PUBLISHED if row.rendered_revision
                        else BulletinStatus.QUEUED,
                        attempts=0, pending_since=now)
            )  # fmt: skip
    _send_renders(runtime, [(row.id, row.revision) for row in failed])
    return len(failed)


def restart_stuck_builds(runtime: Runtime) -> int:
    return sum(runtime.refresher.kick(job, listing) for job, listing in runtime.refresher.pending())


def verify_listings(runtime: Runtime) -> int:
    """Rebuild every page listing or feed whose last build no longer matches the database."""
    settings = runtime.settings
    sizes = {Job.PAGE: settings.index_items, Job.FEED: settings.feed_items}
    stale = 0
    with session_factory(settings)() as session:
        for listing in all_listings(session):
            versions = newest_versions(session, listing, max(sizes.values()))
            for job, size in sizes.items():
                if runtime.refresher.built(job, listing) != fingerprint(versions[:size]):
                    runtime.refresher.request(job, listing)
                    stale += 1
    return stale


def reconcile_once(runtime: Runtime, *, verify: bool = False) -> Pass:
    result = Pass(
        released=release_embargoes(runtime),
        requeued=requeue_stale(runtime),
        restarted=restart_stuck_builds(runtime),
    )
    if verify:
        result.stale = verify_listings(runtime)
    return result


def run_forever(runtime: Runtime) -> None:
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = runtime.settings
    log.info("reconciler running every %.1f s", settings.reconcile_interval_seconds)
    next_verify = 0.0  # verify at once: builds `/` and the feeds of a new site
    while not stop.is_set():
        try:
            verify = time.monotonic() >= next_verify
            done = reconcile_once(runtime, verify=verify)
            if verify:
                next_verify = time.monotonic() + settings.verify_interval_seconds
            if done:
                log.info("reconciled: %s", done)
        except Exception:
            # Redis or the database is down: say so, and try again next round.
            log.warning("reconcile pass failed", exc_info=True)
        stop.wait(settings.reconcile_interval_seconds)
