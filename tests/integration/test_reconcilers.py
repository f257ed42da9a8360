"""Several reconcilers and feed workers on one PostgreSQL database, as on several hosts.

The reconcilers' scans claim rows with `SELECT … FOR UPDATE SKIP LOCKED`, so two passes
running at once take disjoint rows, neither waits for the other's locks, and every bulletin
left stuck is still published (by a real render worker). Several feed workers building the
same listings at once leave each feed with exactly the newest items of the database."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import event, func, select

from services.reconciler.loop import release_embargoes, requeue_stale
from shared.agencies import create_agency
from shared.celery_app import create_celery_app
from shared.db import create_schema, engine_for, session_scope
from shared.listings import fingerprint, newest_versions
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.refresh import Job
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind
from shared.testing import eventually
from tests.conftest import fresh_postgresql

STUCK = 800  # more than one scan's batch (500): the second pass finds the rows left over
HOLD_TIMEOUT = 60.0  # only so a regression (a pass waiting on locks) fails instead of hanging


@pytest.fixture
def runtime(private_redis: str, tmp_path: Path) -> Iterator[Runtime]:
    with fresh_postgresql("bantin_reconcilers") as url:
        settings = Settings(
            data_dir=tmp_path, database_url=url, redis_url=private_redis, requeue_after_seconds=30
        )
        create_schema(settings)
        Redis.from_url(private_redis).flushdb()
        runtime = build_runtime(settings, create_celery_app(settings))
        yield runtime
        runtime.redis.close()
        engine_for(settings).dispose()


def add_stuck(runtime: Runtime, status: BulletinStatus, *, pending: bool) -> set[int]:
    """STUCK bulletins left `status`: a render owed for minutes (`pending`), or an embargo
    whose time has come."""
    old = utcnow() - timedelta(minutes=5)
    with session_scope(runtime.settings) as session:
        agency, _key = create_agency(session, name="Sở Y tế", slug="so-y-te")
        rows = [
            Bulletin(agency_id=agency.id, slug=f"ban-tin-{i}", title=f"Bản tin {i}",
                     status=status, pending_since=old + timedelta(milliseconds=i) if pending
                     else None, body_format="text", body_source="b", body_html="<p>b</p>",
                     published_at=old)
            for i in range(STUCK)
        ]  # fmt: skip
        session.add_all(rows)
        session.flush()
        return {row.id for row in rows}


def sent_renders(redis: Redis) -> list[int]:
    """The bulletin ids of the render messages waiting in Redis."""
    ids = []
    for raw in redis.lrange("render", 0, -1):
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        ids.append(args[0])
    return ids


def concurrent_passes(runtime: Runtime, scan: Callable[[Runtime], int]) -> tuple[int, int]:
    """Two passes of `scan`: the first is held just after its claiming SELECT (its rows
    locked, its transaction open) while the second runs from start to end."""
    first = threading.current_thread()  # replaced by the first pass's thread below
    claimed, finished = threading.Event(), threading.Event()

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is first and "SKIP LOCKED" in statement:
            claimed.set()
            assert finished.wait(HOLD_TIMEOUT), "the second pass never finished"

    engine = engine_for(runtime.settings)
    event.listen(engine, "after_cursor_execute", hold)
    counts: dict[str, int] = {}
    try:
        first = threading.Thread(target=lambda: counts.update(first=scan(runtime)))
        first.start()
        assert claimed.wait(HOLD_TIMEOUT), "the first pass never claimed its rows"
        counts["second"] = scan(runtime)  # would wait on the first's locks without SKIP LOCKED
        finished.set()
        first.join(HOLD_TIMEOUT)
    finally:
        finished.set()
        event.remove(engine, "after_cursor_execute", hold)
    return counts["first"], counts["second"]


def render_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BANTIN_DATA_DIR": str(settings.data_dir),
           "BANTIN_DATABASE_URL": settings.resolved_database_url,
           "BANTIN_REDIS_URL": str(settings.redis_url)}  # fmt: skip
    log = (settings.data_dir / "render.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "render", "-c", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def published(settings: Settings) -> int:
    with session_scope(settings) as session:
        query = select(func.count()).where(
            Bulletin.status == BulletinStatus.PUBLISHED, Bulletin.pending_since.is_(None)
        )
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize(
    ("scan", "status", "pending"),
    [
        (requeue_stale, BulletinStatus.QUEUED, True),
        (release_embargoes, BulletinStatus.SCHEDULED, False),
    ],
    ids=["requeue", "embargo"],
)
def test_two_reconcilers_claim_disjoint_rows_and_every_bulletin_is_published(
    runtime: Runtime, scan: Callable[[Runtime], int], status: BulletinStatus, pending: bool
) -> None:
    stuck = add_stuck(runtime, status, pending=pending)
    first, second = concurrent_passes(runtime, scan)
    # The first took a whole batch; the second skipped those rows and took the rest.
    assert (first, second) == (500, STUCK - 500)
    sent = sent_renders(runtime.redis)
    assert len(sent) == STUCK and set(sent) == stuck  # each bulletin sent once, none missed
    assert scan(runtime) == 0  # nothing left for a third pass

    worker = render_worker(runtime.settings)
    try:
        eventually(
            lambda: published(runtime.settings) == STUCK or None,
            f"all {STUCK} stuck bulletins published",
            timeout=180,
        )
    finally:
        worker.terminate()
        worker.wait(30)


def feed_workers(settings: Settings, count: int) -> list[subprocess.Popen[bytes]]:
    """`count` feed workers of 2 processes each, as on `count` hosts."""
    env = {**os.environ, "BANTIN_DATA_DIR": str(settings.data_dir),
           "BANTIN_DATABASE_URL": settings.resolved_database_url,
           "BANTIN_REDIS_URL": str(settings.redis_url)}  # fmt: skip
    workers = []
    for n in range(count):
        log = (settings.data_dir / f"feed-{n}.log").open("wb")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "services.cli", "worker", "feed", "-c", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    return workers


def feed_items(runtime: Runtime, listing: Listing) -> list[str]:
    """The item ids of a listing's JSON feed as stored ([] before its first build)."""
    data = runtime.storage.get(listing.feed_path("json").lstrip("/"))
    return [item["id"] for item in json.loads(data)["items"]] if data else []


def test_listing_builds_stay_right_with_several_feed_workers(runtime: Runtime) -> None:
    """Builds requested from many threads while bulletins keep arriving, served by two feed
    workers of two processes each: at the end every feed holds the newest items of the
    database, in order, once each, and no build is left pending."""
    settings = runtime.settings
    with session_scope(settings) as session:
        agency, _key = create_agency(session, name="Sở Y tế", slug="so-y-te")
        agency_id = agency.id
    listings = [ALL, Listing(ListingKind.AGENCY, "so-y-te"),
                *(Listing(ListingKind.CATEGORY, f"muc-{c}") for c in range(3))]  # fmt: skip
    workers = feed_workers(settings, 2)
    try:
        for round_ in range(12):
            with session_scope(settings) as session:
                session.add_all(
                    Bulletin(agency_id=agency_id, slug=f"tin-{round_}-{i}",
                             title=f"Tin {round_}-{i}", status=BulletinStatus.PUBLISHED,
                             revision=1, rendered_revision=1, pending_since=None,
                             category=f"Mục {i % 3}", category_slug=f"muc-{i % 3}",
                             body_format="text", body_source="b", body_html="<p>b</p>",
                             published_at=utcnow())
                    for i in range(6)
                )  # fmt: skip
            threads = [
                threading.Thread(target=runtime.refresher.request_many,
                                 args=([(Job.FEED, listing) for listing in listings],))
                for _ in range(4)
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        def right() -> bool | None:
            with session_scope(settings) as session:
                for listing in listings:
                    newest = newest_versions(session, listing, settings.feed_items)
                    if runtime.refresher.built(Job.FEED, listing) != fingerprint(newest):
                        return None
            return not runtime.refresher.pending() or None

        eventually(right, "every feed built from the newest rows", timeout=120)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    with session_scope(settings) as session:
        for listing in listings:
            guids = dict(session.execute(select(Bulletin.id, Bulletin.guid)).all())
            newest = newest_versions(session, listing, settings.feed_items)
            items = feed_items(runtime, listing)
            assert len(items) == len(set(items)), f"duplicates in {listing.target}"
            assert items == [str(guids[i]) for i, _rev in newest], listing.target
