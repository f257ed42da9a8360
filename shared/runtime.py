"""Per-process resources of a worker or service, built once on first use (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from celery import Celery, current_app
from redis import Redis

from shared.refresh import Refresher
from shared.settings import Settings, get_settings
from shared.storage import Storage, open_storage


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    storage: Storage
    redis: Redis
    refresher: Refresher


def build_runtime(settings: Settings, celery: Celery) -> Runtime:
    redis = Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=5)
    return Runtime(
        settings=settings,
        storage=open_storage(settings),
        redis=redis,
        refresher=Refresher(
            redis,
            celery,
            page_interval=settings.listing_rebuild_seconds,
            feed_interval=settings.feed_rebuild_seconds,
        ),
    )


@cache
def worker_runtime() -> Runtime:
    """The runtime of a Celery worker process, configured from the environment."""
    return build_runtime(get_settings(), current_app)
