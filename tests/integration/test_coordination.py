"""The coalescer and the reconciler against a real (private) Redis and a real database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import select, update

from services.reconciler.loop import Pass, reconcile_once, retry_failed_bulletins
from services.render.jobs import give_up
from shared.agencies import create_agency
from shared.celery_app import create_celery_app
from shared.db import create_schema, session_scope
from shared.listings import fingerprint, newest_versions
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.refresh import MIN_REBUILD_INTERVAL, Job
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind, article_path, file_for

LISTING = Listing(ListingKind.AGENCY, "so-y-te")


@pytest.fixture
def runtime(private_redis: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis, requeue_after_seconds=30)
    create_schema(settings)
    # Our private server: each test starts from nothing. Flushed before the Celery app is
    # made, since a flush also drops the queue bindings an app declared once.
    Redis.from_url(private_redis).flushdb()
    runtime = build_runtime(settings, create_celery_app(settings))
    yield runtime
    runtime.redis.close()


def queued_tasks(redis: Redis, queue: str) -> list[str]:
    import json

    return [json.loads(raw)["headers"]["task"] for raw in redis.lrange(queue, 0, -1)]


def test_requests_while_a_build_is_queued_send_one_task(runtime: Runtime) -> None:
    started = [runtime.refresher.request(Job.FEED, LISTING) for _ in range(25)]
    assert started == [True] + [False] * 24
    assert queued_tasks(runtime.redis, "feed") == ["feed.listing"]


def test_a_request_during_a_build_makes_the_builder_go_round_once_more(runtime: Runtime) -> None:
    runtime.refresher.request(Job.PAGE, LISTING)
    calls = 0

    def build() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:  # three bulletins land while the first build runs
            for _ in range(3):
                assert runtime.refresher.request(Job.PAGE, LISTING) is False
        return f"build-{calls}"

    # Requests came during the build: build again, after a short pause (the lock is kept).
    again_in = runtime.refresher.run(Job.PAGE, LISTING, build)
    assert again_in is not None and 0 <= again_in <= MIN_REBUILD_INTERVAL
    assert runtime.refresher.request(Job.PAGE, LISTING) is False  # still locked
    assert runtime.refresher.run(Job.PAGE, LISTING, build) is None  # nothing new: done
    assert runtime.refresher.builds(Job.PAGE, LISTING) == 2
    assert runtime.refresher.built(Job.PAGE, LISTING) == "build-2"
    # Lock released: the next request starts a build at once.
    assert runtime.refresher.request(Job.PAGE, LISTING) is True


def test_a_build_killed_midway_is_found_and_restarted(runtime: Runtime) -> None:
    runtime.refresher.request(Job.FEED, LISTING)
    assert runtime.refresher.pending() == []  # a build is queued: nothing stuck yet
    runtime.refresher.release(Job.FEED, LISTING)  # as if its worker died and the lock expired
    assert runtime.refresher.pending() == [(Job.FEED, LISTING)]
    assert reconcile_once(runtime) == Pass(restarted=1)
    assert queued_tasks(runtime.redis, "feed") == ["feed.listing", "feed.listing"]
    assert runtime.refresher.pending() == []


def test_the_reconciler_resends_bulletins_left_queued(runtime: Runtime) -> None:
    settings = runtime.settings
    with session_scope(settings) as session:
        agency, _key = create_agency(session, name="Sở Y tế", slug="so-y-te")
        old = utcnow() - timedelta(minutes=5)

        def bulletin(title: str, status: BulletinStatus, pending: datetime | None) -> Bulletin:
            return Bulletin(agency_id=agency.id, slug=title.lower(), title=title, status=status,
                            pending_since=pending, body_format="text", body_source="b",
                            body_html="<p>b</p>", published_at=old)  # fmt: skip

        session.add_all([
            bulletin("Lost", BulletinStatus.QUEUED, old),
            bulletin("Fresh", BulletinStatus.QUEUED, utcnow()),
            bulletin("Done", BulletinStatus.PUBLISHED, None),
        ])  # fmt: skip
    assert reconcile_once(runtime) == Pass(requeued=1)
    messages = runtime.redis.lrange("render", 0, -1)
    assert queued_tasks(runtime.redis, "render") == ["render.bulletin"]
    assert b'"Lost"' not in messages[0]  # ids only travel through Redis, never content
    # Its clock restarted: the next pass does not send it again.
    assert not reconcile_once(runtime)


def add_bulletins(runtime: Runtime, *specs: tuple[str, BulletinStatus, timedelta]) -> None:
    """Bulletins of agency so-y-te: (title, status, published_at offset from now)."""
    with session_scope(runtime.settings) as session:
        agency = session.scalar(select(Agency).where(Agency.slug == "so-y-te"))
        if agency is None:
            agency, _key = create_agency(session, name="Sở Y tế", slug="so-y-te")
        for title, status, offset in specs:
            session.add(
                Bulletin(agency_id=agency.id, slug=title.lower(), title=title, status=status,
                         pending_since=None, body_format="text", body_source="b",
                         body_html="<p>b</p>", published_at=utcnow() + offset)
            )  # fmt: skip


def test_embargoes_are_released_when_their_time_comes(runtime: Runtime) -> None:
    add_bulletins(
        runtime,
        ("Due", BulletinStatus.SCHEDULED, timedelta(seconds=-1)),
        ("Later", BulletinStatus.SCHEDULED, timedelta(hours=1)),
    )
    assert reconcile_once(runtime) == Pass(released=1)
    with session_scope(runtime.settings) as session:
        statuses = dict(session.execute(select(Bulletin.title, Bulletin.status)).all())
    assert statuses == {"Due": "queued", "Later": "scheduled"}
    assert queued_tasks(runtime.redis, "render") == ["render.bulletin"]


def test_verification_rebuilds_exactly_the_stale_listings(runtime: Runtime) -> None:
    add_bulletins(runtime, ("Một", BulletinStatus.PUBLISHED, timedelta(minutes=-5)))
    # Nothing was ever built: every listing (all, the agency) is stale, for both jobs.
    assert reconcile_once(runtime, verify=True).stale == 4
    for job in Job:
        for listing in (ALL, LISTING):
            runtime.refresher.run(job, listing, partial(current, runtime, job, listing))
    assert reconcile_once(runtime, verify=True).stale == 0
    # A bulletin published while its trigger was lost: both listings it is in go stale.
    add_bulletins(runtime, ("Hai", BulletinStatus.PUBLISHED, timedelta(minutes=-1)))
    assert reconcile_once(runtime, verify=True).stale == 4
    # Redis restarted empty: the record of what was built is gone, so everything is rebuilt.
    Redis.from_url(runtime.settings.broker_url).flushdb()
    assert reconcile_once(runtime, verify=True).stale == 4


def current(runtime: Runtime, job: Job, listing: Listing) -> str:
    size = runtime.settings.index_items if job is Job.PAGE else runtime.settings.feed_items
    with session_scope(runtime.settings) as session:
        return fingerprint(newest_versions(session, listing, size))


def test_retry_failed_gives_failed_bulletins_a_new_round(runtime: Runtime) -> None:
    add_bulletins(runtime, ("Hỏng", BulletinStatus.FAILED, timedelta(minutes=-1)))
    assert retry_failed_bulletins(runtime) == 1
    with session_scope(runtime.settings) as session:
        row = session.execute(select(Bulletin.status, Bulletin.attempts)).one()
    assert tuple(row) == ("queued", 0)
    assert queued_tasks(runtime.redis, "render") == ["render.bulletin"]
    assert retry_failed_bulletins(runtime) == 0


def set_rows(runtime: Runtime, **changes: dict[str, object]) -> dict[str, int]:
    """Apply column values to bulletins by title; returns title -> id."""
    with session_scope(runtime.settings) as session:
        for title, values in changes.items():
            settled = {"pending_since": None, **values}  # no render owed unless said otherwise
            session.execute(update(Bulletin).where(Bulletin.title == title).values(**settled))
        return {row.title: row.id for row in session.execute(select(Bulletin.title, Bulletin.id))}


def test_the_page_check_repairs_exactly_the_pages_that_disagree_with_their_rows(
    runtime: Runtime,
) -> None:
    minute = timedelta(minutes=-1)
    add_bulletins(
        runtime,
        ("Missing", BulletinStatus.PUBLISHED, minute),  # published, its page is gone
        ("Online", BulletinStatus.WITHDRAWN, minute),  # withdrawn, its page still served
        ("Early", BulletinStatus.SCHEDULED, timedelta(hours=1)),  # embargoed, page public
        ("Fine", BulletinStatus.PUBLISHED, minute),
        ("Gone", BulletinStatus.WITHDRAWN, minute),
    )
    ids = set_rows(
        runtime,
        Missing={"revision": 1, "rendered_revision": 1},
        Online={"revision": 2, "rendered_revision": 2},
        Early={"revision": 2, "rendered_revision": 1},
        Fine={"revision": 3, "rendered_revision": 3},
        Gone={"revision": 2, "rendered_revision": 2},
    )
    pages = {title: file_for(article_path("so-y-te", title.lower(), ids[title])) for title in ids}
    for title in ("Online", "Early", "Fine"):
        runtime.storage.put(pages[title], b"<p>live</p>")

    assert reconcile_once(runtime, verify=True).repaired == 3
    with session_scope(runtime.settings) as session:
        rows = {
            row.title: (row.status, row.revision, row.rendered_revision, row.pending_since)
            for row in session.execute(select(Bulletin)).scalars().all()
        }
    # A render of the current revision is owed again: the page, or the withdrawal's tombstone.
    assert rows["Missing"][:3] == ("published", 1, 0) and rows["Missing"][3] is not None
    assert rows["Online"][:3] == ("withdrawn", 2, 1) and rows["Online"][3] is not None
    assert queued_tasks(runtime.redis, "render").count("render.bulletin") == 2
    # The embargoed page is taken down at once; the rows that agree are left alone.
    assert not runtime.storage.exists(pages["Early"]) and rows["Early"][:3] == ("scheduled", 2, 1)
    assert runtime.storage.exists(pages["Fine"]) and rows["Fine"][3] is None
    assert rows["Gone"][3] is None
    # Repairs in flight are not repeated.
    assert reconcile_once(runtime, verify=True).repaired == 0


def test_a_withdrawal_whose_render_fails_for_good_stays_withdrawn(runtime: Runtime) -> None:
    add_bulletins(runtime, ("Rút", BulletinStatus.WITHDRAWN, timedelta(minutes=-1)))
    ids = set_rows(runtime, Rút={"revision": 2, "rendered_revision": 1})
    give_up(runtime, ids["Rút"], 2, "disk full")
    with session_scope(runtime.settings) as session:
        row = session.execute(select(Bulletin.status, Bulletin.last_error)).one()
    # Never "failed": `retry-failed` would then put a withdrawn bulletin back in the listings.
    assert tuple(row) == ("withdrawn", "disk full")
    assert retry_failed_bulletins(runtime) == 1
    with session_scope(runtime.settings) as session:
        status, pending = session.execute(select(Bulletin.status, Bulletin.pending_since)).one()
    assert status == "withdrawn" and pending is not None
    assert queued_tasks(runtime.redis, "render") == ["render.bulletin"]
