"""queue_stats against a real (private) Redis and a SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from redis import Redis

from shared.celery_app import DELIVER_QUEUE, FEED_QUEUE, RENDER_QUEUE, create_celery_app
from shared.db import create_schema, session_scope
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.queues import QueueStats, queue_lists, queue_stats
from shared.refresh import Job, Refresher
from shared.settings import Settings
from shared.site import ALL


@pytest.fixture
def settings(tmp_path: Path, private_redis: str) -> Settings:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    create_schema(settings)
    return settings


@pytest.fixture
def redis(private_redis: str) -> Iterator[Redis]:
    client = Redis.from_url(private_redis)
    client.flushdb()  # the module's own Redis: each test starts empty
    yield client
    client.close()


def by_queue(stats: list[QueueStats]) -> dict[str, QueueStats]:
    return {s.queue: s for s in stats}


def add_bulletin(
    settings: Settings,
    status: BulletinStatus,
    owed_for: float | None,
    published_ago: float | None = None,
) -> int:
    """A bulletin whose current revision was accepted `owed_for` seconds ago and is owed a
    render since (None: owes nothing; accepted now), published `published_ago` seconds ago
    (default: when accepted)."""
    now = utcnow()
    accepted = now - timedelta(seconds=owed_for or 0)
    published = accepted if published_ago is None else now - timedelta(seconds=published_ago)
    with session_scope(settings) as session:
        agency = session.query(Agency).first() or Agency(slug="so-y-te", name="Sở Y tế")
        session.add(agency)
        session.flush()
        bulletin = Bulletin(
            agency_id=agency.id, slug="b", title="B", body_format="text", body_source="b",
            body_html="<p>b</p>", published_at=published, status=status, updated_at=accepted,
            pending_since=None if owed_for is None else accepted,
        )  # fmt: skip
        session.add(bulletin)
        session.flush()
        return bulletin.id


def test_nothing_waits_on_an_empty_system(settings: Settings, redis: Redis) -> None:
    stats = queue_stats(settings, redis)
    assert [s.queue for s in stats] == [RENDER_QUEUE, FEED_QUEUE, DELIVER_QUEUE]
    assert all(s.depth == 0 and s.oldest_age_seconds is None for s in stats)


def test_depth_counts_priority_lists_and_not_unacked_messages(
    settings: Settings, redis: Redis
) -> None:
    render_lists = queue_lists(RENDER_QUEUE)
    assert render_lists[0] == RENDER_QUEUE and len(render_lists) == 4
    redis.rpush(RENDER_QUEUE, "m1", "m2")
    redis.rpush(render_lists[2], "m3")  # a priority sub-list
    redis.rpush(FEED_QUEUE, "f1")
    redis.hset("unacked", "tag-1", "taken by a worker: not waiting")
    stats = by_queue(queue_stats(settings, redis))
    assert stats[RENDER_QUEUE].depth == 3
    assert stats[FEED_QUEUE].depth == 1


def test_render_age_is_the_oldest_owed_render_not_an_embargo(
    settings: Settings, redis: Redis
) -> None:
    add_bulletin(settings, BulletinStatus.PUBLISHED, None)  # nothing owed
    add_bulletin(settings, BulletinStatus.QUEUED, 30)
    add_bulletin(settings, BulletinStatus.QUEUED, 5)
    add_bulletin(settings, BulletinStatus.SCHEDULED, 7200, -3600)  # embargoed: owes nothing yet
    age = by_queue(queue_stats(settings, redis))[RENDER_QUEUE].oldest_age_seconds
    assert age is not None and 30 <= age < 7200
    assert by_queue(queue_stats(settings, redis))[FEED_QUEUE].oldest_age_seconds is None


def test_feed_age_follows_requests_until_a_build_covers_them(
    settings: Settings, redis: Redis
) -> None:
    refresher = Refresher(redis, create_celery_app(settings))
    assert refresher.request(Job.FEED, ALL)  # starts a build: one message on the feed queue
    refresher.request(Job.FEED, ALL)  # coalesced into the same build
    stats = by_queue(queue_stats(settings, redis))
    assert stats[FEED_QUEUE].depth == 1
    assert stats[FEED_QUEUE].oldest_age_seconds is not None
    assert stats[RENDER_QUEUE].oldest_age_seconds is None  # page builds were not asked for

    assert refresher.run(Job.FEED, ALL, lambda: "fingerprint") is None  # built, nothing more
    assert by_queue(queue_stats(settings, redis))[FEED_QUEUE].oldest_age_seconds is None


def test_a_request_during_a_build_stays_owed(settings: Settings, redis: Redis) -> None:
    refresher = Refresher(redis, create_celery_app(settings))
    refresher.request(Job.PAGE, ALL)

    def build() -> str:
        refresher.request(Job.PAGE, ALL)  # arrives while the build runs: not covered by it
        return "fingerprint"

    assert refresher.run(Job.PAGE, ALL, build) is not None  # must build again
    assert by_queue(queue_stats(settings, redis))[RENDER_QUEUE].oldest_age_seconds is not None
    assert refresher.run(Job.PAGE, ALL, lambda: "fingerprint") is None
    assert by_queue(queue_stats(settings, redis))[RENDER_QUEUE].oldest_age_seconds is None


def test_an_embargo_counts_from_its_release_not_from_the_acceptance(
    settings: Settings, redis: Redis
) -> None:
    # Accepted two hours ago under an embargo that ended 40 s ago, then released: owed 40 s.
    add_bulletin(settings, BulletinStatus.QUEUED, 7200, published_ago=40)
    age = by_queue(queue_stats(settings, redis))[RENDER_QUEUE].oldest_age_seconds
    assert age is not None and 40 <= age < 7200


def test_the_render_age_keeps_growing_when_the_reconciler_resends_it(
    settings: Settings, redis: Redis
) -> None:
    """No worker consumes: the reconciler re-sends the render and restarts its pending_since
    clock, but the work has waited since its acceptance and the age must say so."""
    from services.reconciler.loop import requeue_stale
    from shared.runtime import build_runtime

    settings = settings.model_copy(update={"requeue_after_seconds": 30.0})
    bulletin_id = add_bulletin(settings, BulletinStatus.QUEUED, 100)

    def pending_since() -> datetime | None:
        with session_scope(settings) as session:
            return session.get_one(Bulletin, bulletin_id).pending_since

    owed_since = pending_since()
    before = by_queue(queue_stats(settings, redis))[RENDER_QUEUE].oldest_age_seconds
    assert before is not None and before >= 100

    runtime = build_runtime(settings, create_celery_app(settings))
    try:
        assert requeue_stale(runtime) == 1  # owed 100 s > 30 s: re-sent, clock restarted
    finally:
        runtime.redis.close()
    restarted = pending_since()
    assert owed_since is not None and restarted is not None and restarted > owed_since

    after = by_queue(queue_stats(settings, redis))
    assert after[RENDER_QUEUE].depth == 1  # the re-sent message waits: nobody took it
    age = after[RENDER_QUEUE].oldest_age_seconds
    assert age is not None and age >= before  # not reset to ~0 by the re-send
