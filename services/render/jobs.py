"""What the render worker does, as plain functions the Celery tasks wrap (and tests call)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import CursorResult, update

from services.render.pages import PageRenderer
from shared.db import session_factory, session_scope
from shared.listings import listing_heading, newest_bulletins
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import Listing, article_path, file_for, listings_of

log = logging.getLogger(__name__)


def publish_bulletin(
    runtime: Runtime, renderer: PageRenderer, bulletin_id: int, revision: int
) -> bool:
    """Render one revision of a bulletin's page, mark it published, ask for listing refreshes.

    Idempotent and stale-safe: returns False without writing when the bulletin is gone, the
    revision is no longer the current one, or it was already rendered. The page is written
    while the guarded UPDATE holds the row's write lock, so two renders of one bulletin can
    never interleave and an older revision can never overwrite a newer page.
    """
    settings = runtime.settings
    with session_factory(settings)() as session:
        bulletin = session.get(Bulletin, bulletin_id)
        if bulletin is None or bulletin.revision != revision:
            return False
        if bulletin.rendered_revision >= revision:
            return False
        html = renderer.article(bulletin)
        path = file_for(article_path(bulletin.agency.slug, bulletin.slug, bulletin.id))
        listings = listings_of(bulletin.agency.slug, bulletin.category_slug)

    with session_scope(settings) as session:
        claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin)
            .where(
                Bulletin.id == bulletin_id,
                Bulletin.revision == revision,
                Bulletin.rendered_revision < revision,
            )
            .values(
                status=BulletinStatus.PUBLISHED,
                rendered_revision=revision,
                rendered_at=utcnow(),
                last_error=None,
            )
        )
        if not claimed.rowcount:
            return False
        runtime.storage.put(path, html.encode())

    for listing in listings:
        runtime.refresher.request(Job.PAGE, listing)
        runtime.refresher.request(Job.FEED, listing)
    return True


def render_listing(runtime: Runtime, renderer: PageRenderer, listing: Listing) -> None:
    """Rewrite a listing's index page from the newest published bulletins in the database."""
    settings = runtime.settings
    with session_factory(settings)() as session:
        bulletins = newest_bulletins(session, listing, settings.index_items)
        heading = listing_heading(session, listing, settings.site_title)
        html = renderer.listing(listing, heading, bulletins)
    runtime.storage.put(file_for(listing.page_path), html.encode())
