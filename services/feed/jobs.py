"""What the feed worker does, as plain functions the Celery task wraps (and tests call)."""

from __future__ import annotations

import logging

from services.deliver import fanout
from services.feed.archives import newest_archive
from services.feed.feeds import build_feeds
from shared.db import session_factory
from shared.listings import (
    fingerprint,
    listing_heading,
    newest_bulletins,
    newest_month,
    versions_of,
)
from shared.runtime import Runtime
from shared.site import FEED_FORMATS, Listing, file_for
from shared.worker_metrics import log_build

log = logging.getLogger(__name__)


def write_feeds(runtime: Runtime, listing: Listing) -> str:
    """Rebuild a listing's RSS, Atom and JSON feeds from the newest items in the database.

    Reads only the newest `feed_items` rows (an indexed query), and of the archive only the
    size of its newest month (two index lookups: RSS and Atom link its last part as
    `prev-archive`, archives.py), and never trusts the triggering event for content: whatever
    the database holds now is what ships. Then sends one WebSub fan-out message when the feeds
    have a live subscriber (services/deliver/fanout.py). Returns the fingerprint of the rows
    shown.
    """
    settings = runtime.settings
    with session_factory(settings)() as session:
        bulletins = newest_bulletins(session, listing, settings.feed_items)
        title = listing_heading(session, listing, settings.site_title)
        newest = newest_month(session, listing, settings.archive_items) if bulletins else None
        built = build_feeds(listing, title, bulletins, settings, newest_archive(listing, newest))
    documents = built.by_format()
    for fmt in FEED_FORMATS:
        runtime.storage.put(file_for(listing.feed_path(fmt)), documents[fmt])
    log_build(log, "feeds built", listing, bulletins)
    shown = fingerprint(versions_of(bulletins))
    fanout.notify_subscribers(runtime, listing, shown)
    return shown
