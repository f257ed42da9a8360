"""The reconciler: the database is the truth, Redis only the fast path.

Every `reconcile_interval_seconds` it releases embargoed bulletins whose time has come,
re-sends renders owed for longer than `requeue_after_seconds` (Redis restarted, a message went
down with a killed worker) and restarts listing builds whose builder died. Every
`verify_interval_seconds` it also checks each index page and feed against the database and
rebuilds the stale ones, requests the RFC 5005 archive check of a slice of listings (which
rebuilds the archive months whose build no longer matches the database), and checks
bulletins' pages on disk against their status (the newest ones every time, the older ones a
slice per pass) and repairs any that disagree.

Every change it makes to a bulletin is guarded by the state it read, in the UPDATE itself, so
a request that changed the bulletin meanwhile always wins. Several reconcilers (on several
hosts) may run: on PostgreSQL each scan claims its rows with `SELECT … FOR UPDATE SKIP
LOCKED` in the transaction that updates them, so two passes take disjoint rows and neither
waits on the other's locks (SQLite has one writer at a time and ignores the clause; the
guarded UPDATEs keep it correct there).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

from sqlalchemy import CursorResult, and_, case, or_, select, update

from services.deliver.resend import resend_overdue
from services.reconciler import metrics as reconciler_metrics
from shared.celery_app import RENDER_BULLETIN
from shared.db import session_factory, session_scope
from shared.listings import (
    all_listings,
    fingerprint,
    newest_versions,
)
from shared.logs import bulletin_fields
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import (
    ARCHIVE_CHECK,
    DOCUMENTS,
    SITEMAP_INDEX,
    SITEMAP_NEWS,
    Listing,
    ListingKind,
    archive,
    article_path,
    file_for,
    sitemap,
)

log = logging.getLogger(__name__)
BATCH = 500
# Pages checked against their rows per verification: the newest (where races happen), and
# a slice of the rest, so the whole archive is covered over time at a bounded cost.
PAGE_CHECK_NEWEST = 500
PAGE_CHECK_SLICE = 500
# Listings whose archive check is requested per verification. Each check (on a feed worker)
# lists the listing's months (an index lookup a month) and reads the rows of a bounded
# window of them (services/feed/archives.py `check_window`), so a pass costs at most this
# many windows whatever the site's size; a site with thousands of agencies and categories
# is covered over a few passes instead of all at once.
ARCHIVE_CHECK_SLICE = 100
# Document listings whose page and feeds are compared with the database per verification
# (an index walk each, ~0.2 ms): a site citing 50,000 documents is covered in 25 passes.
DOCUMENT_CHECK_SLICE = 2000


@dataclass
class Pass:
    released: int = 0  # embargoes lifted
    requeued: int = 0  # renders re-sent
    restarted: int = 0  # listing builds restarted
    stale: int = 0  # listings found stale by verification
    repaired: int = 0  # bulletins whose page on disk disagreed with their status
    resent: int = 0  # WebSub deliveries and verifications re-sent (lost with Redis or a worker)

    def __bool__(self) -> bool:
        return any(
            (self.released, self.requeued, self.restarted, self.stale, self.repaired, self.resent)
        )


def _send_renders(runtime: Runtime, rows: Any, action: str) -> int:
    """Send a render for each (id, revision, agency_id) row, logging each as `action`;
    returns how many."""
    rows = list(rows)
    agencies = _agency_slugs(runtime, {row[2] for row in rows})
    for bulletin_id, revision, agency_id in rows:
        runtime.refresher.celery.send_task(RENDER_BULLETIN, args=[bulletin_id, revision])
        log.info("%s: render sent", action,
                 extra=bulletin_fields(bulletin_id, agencies.get(agency_id), revision))  # fmt: skip
    return len(rows)


def _agency_slugs(runtime: Runtime, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    with session_factory(runtime.settings)() as session:
        return dict(session.execute(select(Agency.id, Agency.slug).where(Agency.id.in_(ids))).all())  # type: ignore[arg-type]


def _claim(session: Any, query: Any) -> list[int]:
    """The ids `query` selects, locked until the session's transaction ends; rows another
    reconciler holds are skipped rather than waited for (PostgreSQL; a no-op on SQLite)."""
    return list(session.scalars(query.with_for_update(skip_locked=True)))


def release_embargoes(runtime: Runtime) -> int:
    """Scheduled bulletins whose published_at has come are queued for rendering.

    The UPDATE re-checks both conditions: a correction that moved the embargo later (or
    withdrew the bulletin) since the SELECT keeps it scheduled."""
    now = utcnow()
    with session_scope(runtime.settings) as session:
        due = Bulletin.status == BulletinStatus.SCHEDULED, Bulletin.published_at <= now
        ids = _claim(session, select(Bulletin.id).where(*due).order_by(Bulletin.id).limit(BATCH))
        released = session.execute(
            update(Bulletin)
            .where(Bulletin.id.in_(ids), *due)
            .values(status=BulletinStatus.QUEUED, pending_since=now)
            .returning(Bulletin.id, Bulletin.revision, Bulletin.agency_id)
        ).all() if ids else []  # fmt: skip
    return _send_renders(runtime, released, "embargo released")


def requeue_stale(runtime: Runtime) -> int:
    """Re-send every render owed for longer than `requeue_after_seconds`."""
    settings = runtime.settings
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.requeue_after_seconds)
    with session_scope(settings) as session:
        stale = Bulletin.pending_since < cutoff
        ids = _claim(
            session, select(Bulletin.id).where(stale).order_by(Bulletin.pending_since).limit(BATCH)
        )
        # Restart the clock so a slow render is not sent again on every pass; the revision
        # sent is the one current when the clock restarted.
        requeued = session.execute(
            update(Bulletin)
            .where(Bulletin.id.in_(ids), stale)
            .values(pending_since=now)
            .returning(Bulletin.id, Bulletin.revision, Bulletin.agency_id)
        ).all() if ids else []  # fmt: skip
    return _send_renders(runtime, requeued, "re-sent a render owed too long")


def retry_failed_bulletins(runtime: Runtime) -> int:
    """Give every failed bulletin a fresh set of attempts (the operator's `retry-failed`),
    and every withdrawal whose tombstone could not be written."""
    failed = or_(
        Bulletin.status == BulletinStatus.FAILED,
        and_(Bulletin.status == BulletinStatus.WITHDRAWN,
             Bulletin.rendered_revision < Bulletin.revision,
             Bulletin.pending_since.is_(None)),
    )  # fmt: skip
    with session_scope(runtime.settings) as session:
        retried = session.execute(
            update(Bulletin)
            .where(failed)
            .values(
                # A bulletin whose older revision is live stays listed while it re-renders.
                status=case(
                    (Bulletin.status == BulletinStatus.WITHDRAWN, BulletinStatus.WITHDRAWN),
                    (Bulletin.rendered_revision > 0, BulletinStatus.PUBLISHED),
                    else_=BulletinStatus.QUEUED,
                ),
                attempts=0,
                pending_since=utcnow(),
            )
            .returning(Bulletin.id, Bulletin.revision, Bulletin.agency_id)
        ).all()
    return _send_renders(runtime, retried, "retrying a failed bulletin")


@dataclass
class PageScan:
    """Where the slice of older bulletins checked next begins (below this id)."""

    below: int | None = None


def _page_checks(session: Any, scan: PageScan) -> list[Any]:
    """Rows with no render owed: the newest, and the next slice of older ones."""
    columns = (Bulletin.id, Bulletin.slug, Agency.slug.label("agency"), Bulletin.status,
               Bulletin.revision, Bulletin.rendered_revision)  # fmt: skip
    settled = select(*columns).join(Agency).where(Bulletin.pending_since.is_(None))
    newest = session.execute(settled.order_by(Bulletin.id.desc()).limit(PAGE_CHECK_NEWEST)).all()
    older = settled.order_by(Bulletin.id.desc()).limit(PAGE_CHECK_SLICE)
    if scan.below is not None:
        older = older.where(Bulletin.id < scan.below)
    rows = session.execute(older).all()
    scan.below = rows[-1].id if len(rows) == PAGE_CHECK_SLICE else None  # else start again
    return list({row.id: row for row in [*newest, *rows]}.values())


def verify_pages(runtime: Runtime, scan: PageScan | None = None) -> int:
    """Repair bulletins whose page on disk disagrees with their status: a published one
    without its page, a withdrawn one whose page is still online, a scheduled one whose
    page is public. Returns how many were repaired."""
    storage = runtime.storage
    with session_factory(runtime.settings)() as session:
        rows = _page_checks(session, scan or PageScan())
    pages = {row.id: file_for(article_path(row.agency, row.slug, row.id)) for row in rows}
    # One batched check (concurrent HEADs on a bucket). A store that does not answer raises:
    # the pass fails and is retried, rather than taking every page for missing.
    found = storage.exists_many(pages.values())
    repaired = 0
    for row in rows:
        page = pages[row.id]
        online = str(page) in found
        if row.status == BulletinStatus.SCHEDULED and online:
            repaired += _take_down(runtime, row, page)
        elif (row.status == BulletinStatus.WITHDRAWN and online) or (
            row.status == BulletinStatus.PUBLISHED
            and row.rendered_revision == row.revision
            and not online
        ):
            repaired += _render_again(runtime, row)
    if repaired:
        log.warning("repaired %d bulletins whose page disagreed with their status", repaired)
    return repaired


def _unchanged(row: Any) -> Any:
    """The row still is what the check read: nothing changed it meanwhile."""
    return and_(
        Bulletin.id == row.id,
        Bulletin.revision == row.revision,
        Bulletin.rendered_revision == row.rendered_revision,
        Bulletin.status == row.status,
        Bulletin.pending_since.is_(None),
    )


def _render_again(runtime: Runtime, row: Any) -> int:
    """Owe a render of the current revision again (the page shows an older state)."""
    with session_scope(runtime.settings) as session:
        if not _claim(session, select(Bulletin.id).where(_unchanged(row))):
            return 0  # changed meanwhile, or another reconciler is repairing it
        again = session.execute(
            update(Bulletin)
            .where(_unchanged(row))
            .values(
                rendered_revision=case(
                    (Bulletin.rendered_revision >= Bulletin.revision, Bulletin.revision - 1),
                    else_=Bulletin.rendered_revision,
                ),
                attempts=0,
                pending_since=utcnow(),
            )
            .returning(Bulletin.id, Bulletin.revision, Bulletin.agency_id)
        ).all()
    return _send_renders(runtime, again, "repair: page disagreed with the status, re-rendering")


def _take_down(runtime: Runtime, row: Any, page: Any) -> int:
    """Remove the page of an embargoed bulletin, holding its row as renders do."""
    with session_scope(runtime.settings) as session:
        if not _claim(session, select(Bulletin.id).where(_unchanged(row))):
            return 0  # changed meanwhile, or another reconciler is taking it down
        held: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin).where(_unchanged(row)).values(attempts=Bulletin.attempts)
        )
        if not held.rowcount:
            return 0
        runtime.storage.delete(page)
    log.warning("repair: took down the page of an embargoed bulletin",
                extra=bulletin_fields(row.id, row.agency, row.revision))  # fmt: skip
    return 1


def restart_stuck_builds(runtime: Runtime) -> int:
    return sum(runtime.refresher.kick(job, listing) for job, listing in runtime.refresher.pending())


@dataclass
class ArchiveScan:
    """Where the slice of listings whose archives are checked next begins (or of the
    documents whose listings are verified next)."""

    start: int = 0
    # The documents' archives take their own round: thousands of them must not stretch the
    # round of the agencies' and categories' archives from one pass to hundreds.
    document_start: int = 0


def verify_listings(
    runtime: Runtime, archives: ArchiveScan | None = None, documents: ArchiveScan | None = None
) -> int:
    """Rebuild every page listing or feed whose last build no longer matches the database
    (the legal documents' among them: the next DOCUMENT_CHECK_SLICE of them, all without
    `documents`; and the /van-ban/ index); request the archive check of the next slice of
    listings (all of them without `archives`)."""
    settings = runtime.settings
    sizes = {Job.PAGE: settings.index_items, Job.FEED: settings.feed_items}
    stale = 0
    with session_factory(settings)() as session:
        listings = all_listings(session)
        for listing in _checked(listings, documents):
            versions = newest_versions(session, listing, max(sizes.values()))
            for job, size in sizes.items():
                if runtime.refresher.built(job, listing) != fingerprint(versions[:size]):
                    runtime.refresher.request(job, listing)
                    log.info("stale %s of %s: rebuild requested", job.value, listing.target,
                             extra={"listing": listing.target})  # fmt: skip
                    stale += 1
    # /van-ban/ aggregates every citation of the site (seconds on a big archive): not compared
    # here every pass. Each document listing's build asks for it (services/render/jobs.py),
    # so the repairs above bring it along; here only a site (or a Redis) that never built it
    # gets it, the page every footer links. Like the sitemaps, not counted as stale.
    if runtime.refresher.built(Job.PAGE, DOCUMENTS) is None:
        runtime.refresher.request(Job.PAGE, DOCUMENTS)
        log.info("documents index never built: build requested",
                 extra={"listing": DOCUMENTS.target})  # fmt: skip
    # Sitemaps: the news sitemap's two-day window moves with the clock, not with publishing,
    # and the index build re-checks every month against the database (and rebuilds a month
    # whose file or build went missing). Both are cheap and single-flight.
    runtime.refresher.request_many(
        [(Job.PAGE, sitemap(SITEMAP_NEWS)), (Job.PAGE, sitemap(SITEMAP_INDEX))]
        + [
            (Job.FEED, archive(listing, ARCHIVE_CHECK))
            for listing in _archive_checks(listings, archives)
        ]
    )
    return stale


def _slice(
    listings: list[Any], scan: ArchiveScan | None, size: int = ARCHIVE_CHECK_SLICE
) -> list[Any]:
    """The listings whose archives this pass checks; moves `scan` on (round the end)."""
    if scan is None or len(listings) <= size:
        return listings
    start = scan.start % len(listings)
    chosen = (listings + listings)[start : start + size]
    scan.start = (start + size) % len(listings)
    return chosen


def _documents_apart(listings: list[Listing]) -> tuple[list[Listing], list[Listing]]:
    """(the site's, agencies' and categories' listings, the documents'): one per document
    ever cited, so thousands on a big site, checked a slice at a time."""
    others: list[Listing] = []
    cited: list[Listing] = []
    for listing in listings:
        (cited if listing.kind is ListingKind.DOCUMENT else others).append(listing)
    return others, cited


def _archive_checks(listings: list[Listing], scan: ArchiveScan | None) -> list[Listing]:
    """The listings whose archives this pass checks: the next slice of the site's, agencies'
    and categories' listings, and the next slice of the documents' (a round of their own)."""
    if scan is None:
        return listings
    others, cited = _documents_apart(listings)
    documents = ArchiveScan(scan.document_start)
    chosen = _slice(others, scan) + _slice(cited, documents)
    scan.document_start = documents.start
    return chosen


def _checked(listings: list[Listing], documents: ArchiveScan | None) -> list[Listing]:
    """The listings whose page and feeds this pass compares with the database: every one
    but the documents, and of those (one per document ever cited: thousands on a big site,
    a query each) the next DOCUMENT_CHECK_SLICE. Their publishes request them directly; this
    is for lost triggers, so a round of passes may take its time."""
    others, cited = _documents_apart(listings)
    return others + _slice(cited, documents, DOCUMENT_CHECK_SLICE)


def reconcile_once(
    runtime: Runtime,
    *,
    verify: bool = False,
    scan: PageScan | None = None,
    archives: ArchiveScan | None = None,
    documents: ArchiveScan | None = None,
) -> Pass:
    result = Pass(
        released=release_embargoes(runtime),
        requeued=requeue_stale(runtime),
        restarted=restart_stuck_builds(runtime),
        resent=resend_overdue(
            session_factory(runtime.settings),
            runtime.refresher.celery,
            timedelta(seconds=runtime.settings.requeue_after_seconds),
        ),
    )
    if verify:
        result.repaired = verify_pages(runtime, scan)
        result.stale = verify_listings(runtime, archives, documents)
    return result


@dataclass
class LoopState:
    """What the reconciler tells its heartbeat (and so `bantin status`)."""

    passes: int = 0
    failed_passes: int = 0
    last_pass_at: float | None = None  # Unix time the last pass finished
    last_pass_seconds: float | None = None
    last_pass: dict[str, int] = field(default_factory=dict)  # what it did
    totals: dict[str, int] = field(default_factory=dict)  # what it did since it started
    last_error: str | None = None

    def info(self) -> dict[str, Any]:
        return asdict(self)


def _record(state: LoopState, done: Pass | None, seconds: float, error: str | None) -> None:
    state.last_pass_at, state.last_pass_seconds = time.time(), seconds
    reconciler_metrics.PASS_DURATION.observe(seconds)
    reconciler_metrics.LAST_PASS.set(state.last_pass_at)
    if done is None:
        state.failed_passes += 1
        state.last_error = error
        reconciler_metrics.PASSES.labels("error").inc()
        return
    state.passes += 1
    state.last_pass = asdict(done)
    reconciler_metrics.PASSES.labels("ok").inc()
    for action, count in state.last_pass.items():
        state.totals[action] = state.totals.get(action, 0) + count
        if count:
            reconciler_metrics.ACTIONS.labels(action).inc(count)


def run_forever(runtime: Runtime, state: LoopState | None = None) -> None:
    stop = threading.Event()
    state = state or LoopState()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = runtime.settings
    log.info("reconciler running every %.1f s", settings.reconcile_interval_seconds)
    next_verify = 0.0  # verify at once: builds `/` and the feeds of a new site
    scan, archives, documents = PageScan(), ArchiveScan(), ArchiveScan()
    while not stop.is_set():
        started = time.monotonic()
        try:
            verify = time.monotonic() >= next_verify
            done = reconcile_once(
                runtime, verify=verify, scan=scan, archives=archives, documents=documents
            )
            if verify:
                next_verify = time.monotonic() + settings.verify_interval_seconds
            if done:
                log.info("reconciled: %s", done)
            _record(state, done, time.monotonic() - started, None)
        except Exception as exc:
            # Redis or the database is down: say so, and try again next round.
            log.warning("reconcile pass failed", exc_info=True)
            _record(state, None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:500])
        stop.wait(settings.reconcile_interval_seconds)
