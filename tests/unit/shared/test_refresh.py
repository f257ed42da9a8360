"""The single-flight refresher's bookkeeping against a real (private) Redis: the set of
targets `pending` reads keeps only builds that are owed, and the build lock can be renewed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from shared.celery_app import create_celery_app
from shared.refresh import LOCK_TTL_SECONDS, TARGETS_KEY, Job, Refresher
from shared.settings import Settings
from shared.site import ALL, archive

MONTH = archive(ALL, "2011-02")
MEMBER = f"feed|{MONTH.target}"


@pytest.fixture
def refresher(private_redis: str, tmp_path: Path) -> Iterator[Refresher]:
    client = Redis.from_url(private_redis)
    client.flushdb()  # the module's own Redis: each test starts empty
    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    yield Refresher(client, create_celery_app(settings))
    client.close()


def targets(refresher: Refresher) -> set[str]:
    members = refresher.redis.smembers(TARGETS_KEY)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


def test_a_finished_build_leaves_the_targets_set(refresher: Refresher) -> None:
    assert refresher.request(Job.FEED, MONTH)  # took the lock, sent the task
    assert MEMBER in targets(refresher)
    assert refresher.run(Job.FEED, MONTH, lambda: "f") is None
    assert MEMBER not in targets(refresher)
    assert refresher.pending() == []
    # The next request adds it again.
    assert refresher.request(Job.FEED, MONTH)
    assert MEMBER in targets(refresher)


def test_a_request_during_the_build_keeps_the_target_until_it_is_covered(
    refresher: Refresher,
) -> None:
    refresher.request(Job.FEED, MONTH)

    def build() -> str:
        # Arrives while the build runs: the finish must keep the lock and the target.
        assert not refresher.request(Job.FEED, MONTH)
        return "f"

    assert refresher.run(Job.FEED, MONTH, build) is not None  # go round again
    assert MEMBER in targets(refresher)
    # The builder dies here (no second round): the reconciler still finds it once the
    # lock is gone.
    refresher.release(Job.FEED, MONTH)
    assert refresher.pending() == [(Job.FEED, MONTH)]
    assert refresher.kick(Job.FEED, MONTH)
    assert refresher.run(Job.FEED, MONTH, lambda: "f") is None
    assert MEMBER not in targets(refresher) and refresher.pending() == []


def test_a_failed_build_stays_a_target_for_the_reconciler(refresher: Refresher) -> None:
    refresher.request(Job.FEED, MONTH)
    refresher.release(Job.FEED, MONTH)  # what a build that kept failing does
    assert MEMBER in targets(refresher)
    assert refresher.pending() == [(Job.FEED, MONTH)]


def test_extend_renews_the_lock(refresher: Refresher) -> None:
    lock = f"bantin:refresh:feed:{MONTH.target}:lock"
    refresher.request(Job.FEED, MONTH)
    refresher.redis.expire(lock, 2)
    refresher.extend(Job.FEED, MONTH)
    assert refresher.redis.ttl(lock) > 2
    assert refresher.redis.ttl(lock) <= LOCK_TTL_SECONDS
    # No lock, nothing to renew: extend never takes one.
    refresher.release(Job.FEED, MONTH)
    refresher.extend(Job.FEED, MONTH)
    assert refresher.redis.exists(lock) == 0


def test_a_refresher_keeps_its_own_rebuild_intervals(refresher: Refresher) -> None:
    """BANTIN_FEED_REBUILD_SECONDS reaches the builds: the next round waits that long."""
    slow = Refresher(refresher.redis, refresher.celery, page_interval=3.0, feed_interval=7.0)
    for job, interval in ((Job.FEED, 7.0), (Job.PAGE, 3.0)):
        slow.request(job, ALL)

        def build(job: Job = job) -> str:
            slow.request(job, ALL)  # another bulletin arrives during the build
            return "f"

        again_in = slow.run(job, ALL, build)
        assert again_in is not None and interval - 1 < again_in <= interval
        slow.release(job, ALL)
