"""What the render worker does, as plain functions the Celery tasks wrap (and tests call)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import CursorResult, case, select, update

from services.render.pages import PageRenderer
from shared import faults, worker_metrics
from shared.db import session_factory, session_scope
from shared.listings import fingerprint, listing_heading, newest_bulletins, versions_of
from shared.logs import bulletin_fields
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import Listing, article_path, file_for, listings_of, tombstone_for

log = logging.getLogger(__name__)

# Statuses whose current revision a render task may act on.
_RENDERABLE = (BulletinStatus.QUEUED, BulletinStatus.PUBLISHED, BulletinStatus.WITHDRAWN)


def _current(bulletin_id: int, revision: int) -> Any:
    """The WHERE clause of "this revision is current and still owes a render"."""
    return (
        (Bulletin.id == bulletin_id)
        & (Bulletin.revision == revision)
        & (Bulletin.rendered_revision < revision)
        & Bulletin.status.in_(_RENDERABLE)
    )


def _claim_attempt(runtime: Runtime, bulletin_id: int, revision: int) -> Bulletin | None:
    """Count one attempt at this revision and load the bulletin; None when there is nothing
    (more) to do.

    Counted in the database, not in Redis, and committed before rendering, so a poison
    bulletin that kills its worker (and is redelivered for ever by
    `task_reject_on_worker_lost`) still runs out of attempts, and is then marked failed here.
    One UPDATE … RETURNING both counts and loads (a separate SELECT cost ~0.8 ms a render).
    """
    settings = runtime.settings
    with session_scope(settings) as session:
        claimed = session.scalars(
            update(Bulletin)
            .where(_current(bulletin_id, revision), Bulletin.attempts < settings.max_attempts)
            .values(attempts=Bulletin.attempts + 1)
            .returning(Bulletin)
        ).one_or_none()
        if claimed is not None:
            claimed.agency  # noqa: B018 - load it now: the page needs it after the session
            return claimed
        # Still owed but no attempts left, or simply nothing to do (stale, already done)?
        exhausted = session.execute(
            select(Bulletin.last_error).where(_current(bulletin_id, revision))
        ).one_or_none()
    if exhausted is not None:
        last_error = exhausted.last_error or "the worker died while rendering"
        reason = f"gave up after {settings.max_attempts} attempts; last error: {last_error}"
        give_up(runtime, bulletin_id, revision, reason)
    return None


def _agency_of(session: Any, bulletin_id: int) -> str | None:
    """The bulletin's agency slug, for the log line of a rare event (a failure)."""
    return session.scalar(  # type: ignore[no-any-return]
        select(Agency.slug).join(Bulletin, Bulletin.agency_id == Agency.id)
        .where(Bulletin.id == bulletin_id)
    )  # fmt: skip


def give_up(runtime: Runtime, bulletin_id: int, revision: int, reason: str) -> None:
    """Stop retrying a revision. A withdrawal stays `withdrawn` (it must never look public
    again, nor be put back in listings by `retry-failed`); the reconciler's page check
    retries it while its page is still online."""
    with session_scope(runtime.settings) as session:
        agency = _agency_of(session, bulletin_id)
        gave_up: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin)
            .where(_current(bulletin_id, revision))
            .values(
                status=case(
                    (Bulletin.status == BulletinStatus.WITHDRAWN, BulletinStatus.WITHDRAWN),
                    else_=BulletinStatus.FAILED,
                ),
                pending_since=None,
                last_error=reason,
            )
        )
    if gave_up.rowcount:
        worker_metrics.FAILED.inc()
    log.error(
        "render gave up on bulletin %s revision %s: %s", bulletin_id, revision, reason,
        extra=bulletin_fields(bulletin_id, agency, revision),
    )  # fmt: skip


def record_error(runtime: Runtime, bulletin_id: int, revision: int, error: BaseException) -> None:
    """Keep the last error visible in the status API while retries go on."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    with session_scope(runtime.settings) as session:
        agency = _agency_of(session, bulletin_id)
        session.execute(
            update(Bulletin)
            .where(Bulletin.id == bulletin_id, Bulletin.revision == revision)
            .values(last_error=reason)
        )
    log.warning(
        "render of bulletin %s revision %s failed (retrying): %s", bulletin_id, revision, reason,
        extra=bulletin_fields(bulletin_id, agency, revision),
    )  # fmt: skip


def publish_bulletin(
    runtime: Runtime, renderer: PageRenderer, bulletin_id: int, revision: int
) -> bool:
    """Make one revision of a bulletin live (or, once withdrawn, take it down).

    Idempotent and stale-safe: returns False without writing when the bulletin is gone, the
    revision is no longer current, or it was already done. The page is written while the
    guarded UPDATE holds the row's write lock, so two renders of one bulletin never
    interleave and an older revision can never overwrite a newer one.
    """
    settings = runtime.settings
    bulletin = _claim_attempt(runtime, bulletin_id, revision)
    if bulletin is None:
        return False
    fields = bulletin_fields(bulletin_id, bulletin.agency.slug, revision)
    log.debug("render started", extra=fields)
    url_path = article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    withdrawn = bulletin.status == BulletinStatus.WITHDRAWN
    html = renderer.withdrawn(bulletin) if withdrawn else renderer.article(bulletin)
    listings = listings_of(bulletin.agency.slug, bulletin.category_slug)

    faults.checkpoint(settings, faults.RENDER_BEFORE_WRITE)
    with session_scope(settings) as session:
        claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin)
            .where(_current(bulletin_id, revision))
            .values(
                status=BulletinStatus.WITHDRAWN if withdrawn else BulletinStatus.PUBLISHED,
                rendered_revision=revision,
                rendered_at=utcnow(),
                pending_since=None,
                last_error=None,
            )
        )
        if not claimed.rowcount:
            return False
        if withdrawn:
            runtime.storage.put(tombstone_for(url_path), html.encode())
            runtime.storage.delete(file_for(url_path))
        else:
            runtime.storage.put(file_for(url_path), html.encode())
    if withdrawn:
        worker_metrics.WITHDRAWN.inc()
    else:
        worker_metrics.observe_publish(bulletin.updated_at, bulletin.published_at)

    runtime.refresher.request_many([(job, listing) for listing in listings for job in Job])
    # One line per publish, naming the listings asked to refresh: their builds log the
    # listing too, so a bulletin can be followed to the feeds that show it.
    log.info(
        "withdrawn page written" if withdrawn else "published",
        extra=fields | {"listing": ",".join(listing.target for listing in listings)},
    )
    return True


def render_listing(runtime: Runtime, renderer: PageRenderer, listing: Listing) -> str:
    """Rewrite a listing's index page from the database; returns the rows' fingerprint."""
    settings = runtime.settings
    with session_factory(settings)() as session:
        bulletins = newest_bulletins(session, listing, settings.index_items)
        heading = listing_heading(session, listing, settings.site_title)
        html = renderer.listing(listing, heading, bulletins)
    runtime.storage.put(file_for(listing.page_path), html.encode())
    worker_metrics.log_build(log, "index page built", listing, bulletins)
    return fingerprint(versions_of(bulletins))
