"""Celery tasks of the feed worker (queue `feed`)."""

from __future__ import annotations

from celery import Task, shared_task

from services.feed import archives, jobs
from shared.celery_app import BUILD_FEEDS
from shared.refresh import Job, build_in_task
from shared.runtime import worker_runtime
from shared.site import Listing, ListingKind
from shared.worker_metrics import timed_build


# feedgen sets the process-wide locale while it formats dates: feed workers must use the
# prefork pool (processes), never threads or gevent.
@shared_task(name=BUILD_FEEDS, bind=True, max_retries=8)
def build_listing_feeds(self: Task, target: str) -> None:
    listing = Listing.from_target(target)
    runtime = worker_runtime()
    # One task for the feeds and the RFC 5005 archive months of every listing: both use
    # feedgen, which only the prefork pool runs safely.
    if listing.kind is ListingKind.ARCHIVE:
        build = timed_build(Job.FEED, listing, lambda: archives.build(runtime, listing))
    else:
        build = timed_build(Job.FEED, listing, lambda: jobs.write_feeds(runtime, listing))
    build_in_task(self, runtime.refresher, Job.FEED, listing, build)
