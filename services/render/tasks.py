"""Celery tasks of the render worker (queue `render`): article pages, index pages, sitemaps."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from celery import Task, shared_task

from services.render import jobs
from services.render.pages import PageRenderer
from shared.celery_app import RENDER_BULLETIN, RENDER_LISTING
from shared.refresh import Job, build_in_task
from shared.runtime import Runtime, worker_runtime
from shared.site import Listing, ListingKind
from shared.worker_metrics import timed_build

_BUILDS: dict[ListingKind, Callable[[Runtime, PageRenderer, Listing], str]] = {
    ListingKind.SITEMAP: jobs.build_sitemap,
    ListingKind.DOCUMENTS: jobs.build_documents_index,
}


@cache
def _renderer() -> PageRenderer:
    return PageRenderer(worker_runtime().settings)  # templates compiled once per process


@shared_task(
    name=RENDER_BULLETIN,
    autoretry_for=(Exception,),
    retry_backoff=0.5,  # 0.5 s, 1 s, 2 s, ... with full jitter: rides out a busy database
    retry_backoff_max=30,
    retry_jitter=True,
    # After these, the reconciler re-sends; the attempt count in the database (not this)
    # decides when the bulletin is marked failed, so redeliveries after a crash count too.
    max_retries=4,
)
def render_bulletin(bulletin_id: int, revision: int) -> bool:
    runtime = worker_runtime()
    try:
        return jobs.publish_bulletin(runtime, _renderer(), bulletin_id, revision)
    except Exception as exc:
        jobs.record_error(runtime, bulletin_id, revision, exc)
        raise


@shared_task(name=RENDER_LISTING, bind=True, max_retries=8)
def render_listing(self: Task, target: str) -> None:
    listing = Listing.from_target(target)
    runtime = worker_runtime()
    # Sitemaps and the /van-ban/ index are built like index pages (coalesced,
    # single-flight), under the same task.
    build = _BUILDS.get(listing.kind, jobs.render_listing)
    build_in_task(
        self,
        runtime.refresher,
        Job.PAGE,
        listing,
        timed_build(Job.PAGE, listing, lambda: build(runtime, _renderer(), listing)),
    )
