"""`bantin rebuild`: which bulletins it visits, what a batch writes, and what it must not."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from services.cli.rebuild import count_rebuilt, id_batches
from services.feed.archives import PARTIAL
from services.render.batch import rebuild_pages
from services.render.pages import PageRenderer
from shared.citations import Document
from shared.db import create_schema, session_scope
from shared.embedded_redis import start_redis
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.rebuild_progress import BatchReport, read_progress, record_batch
from shared.settings import Settings
from shared.site import article_path, file_for, tombstone_for
from shared.storage import LocalStorage

START = datetime(2024, 1, 1, tzinfo=UTC)
OLD_HTML = b"<p>the page as the old templates wrote it</p>"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, redis_url="memory://")
    create_schema(settings)
    with session_scope(settings) as session:
        session.add(Agency(id=1, slug="so-y-te", name="Sở Y tế"))
    return settings


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    return LocalStorage(settings.resolved_site_dir)


def add(settings: Settings, count: int, **fields: Any) -> list[int]:
    """`count` published, rendered bulletins (overridable), returning their ids."""
    ids = []
    with session_scope(settings) as session:
        for _ in range(count):
            values: dict[str, Any] = {
                "agency_id": 1, "slug": "ban-tin", "title": "Bản tin", "summary": "Tóm tắt",
                "body_format": "text", "body_source": "Nội dung", "body_html": "<p>Nội dung</p>",
                "published_at": START, "status": BulletinStatus.PUBLISHED, "revision": 1,
                "rendered_revision": 1, "pending_since": None, "rendered_at": START,
            } | fields  # fmt: skip
            bulletin = Bulletin(**values)
            session.add(bulletin)
            session.flush()
            ids.append(bulletin.id)
        if values["pending_since"] is None:  # the column's default fills in an explicit None
            session.execute(update(Bulletin).where(Bulletin.id.in_(ids)).values(pending_since=None))
    return ids


def page_of(bulletin_id: int) -> str:
    return article_path("so-y-te", "ban-tin", bulletin_id)


# -- which bulletins a rebuild visits ------------------------------------------------------


def test_keyset_pages_cover_every_rebuilt_bulletin_once_newest_first(settings: Settings) -> None:
    # 7 at each instant: pages of 5 end in the middle of a tie, where a keyset on the date
    # alone would skip or repeat rows.
    ids = []
    for hour in range(9):
        ids += add(settings, 7, published_at=START + timedelta(hours=hour % 4))
    withdrawn = add(settings, 4, status=BulletinStatus.WITHDRAWN, revision=2, rendered_revision=2)
    never = add(settings, 3, status=BulletinStatus.QUEUED, rendered_revision=0)
    never += add(settings, 2, status=BulletinStatus.SCHEDULED, rendered_revision=0)
    never += add(settings, 2, status=BulletinStatus.FAILED, revision=2)
    with session_scope(settings) as session:  # gaps in the ids
        gone = ids[3:30:4]
        session.execute(delete(Bulletin).where(Bulletin.id.in_(gone)))
    expected = set(ids) - set(gone) | set(withdrawn)

    batches = list(id_batches(settings, 5))

    visited = [bulletin_id for batch in batches for bulletin_id in batch]
    assert len(visited) == len(set(visited)) == len(expected) == count_rebuilt(settings)
    assert set(visited) == expected
    assert all(len(batch) <= 5 for batch in batches)
    assert not set(visited) & set(never)
    with session_scope(settings) as session:
        order = session.execute(
            select(Bulletin.id, Bulletin.published_at).where(Bulletin.id.in_(visited))
        ).all()
    rank = {row.id: (row.published_at, row.id) for row in order}
    published = [i for i in visited if i not in withdrawn]
    assert published == sorted(published, key=rank.__getitem__, reverse=True)  # newest first


def test_keyset_pages_of_an_empty_archive(settings: Settings) -> None:
    assert list(id_batches(settings, 10)) == []
    assert count_rebuilt(settings) == 0


# -- what a batch writes -------------------------------------------------------------------


def test_a_batch_rewrites_live_pages_and_skips_a_pending_correction(
    settings: Settings, storage: LocalStorage
) -> None:
    live = add(settings, 3)
    corrected = add(settings, 1, revision=2, rendered_revision=1, pending_since=utcnow())
    queued = add(settings, 1, status=BulletinStatus.QUEUED, rendered_revision=0, rendered_at=None)
    for bulletin_id in live + corrected:
        storage.put(file_for(page_of(bulletin_id)), OLD_HTML)

    report = rebuild_pages(settings, storage, PageRenderer(settings), live + corrected + queued)

    assert report == BatchReport(pages=3, tombstones=0, skipped=2)
    for bulletin_id in live:
        page = storage.get(file_for(page_of(bulletin_id)))
        assert (
            page is not None and page.startswith(b"<!DOCTYPE html>") and "Sở Y tế".encode() in page
        )
    # The correction's own render writes revision 2; the rebuild leaves revision 1 alone.
    assert storage.get(file_for(page_of(corrected[0]))) == OLD_HTML
    assert storage.get(file_for(page_of(queued[0]))) is None
    assert list(storage.root.rglob(".tmp-*")) == []  # no temporary file left behind
    with session_scope(settings) as session:
        rows = session.execute(
            select(Bulletin.status, Bulletin.revision, Bulletin.rendered_revision)
            .where(Bulletin.id.in_(live)).distinct()
        ).all()  # fmt: skip
    assert rows == [(BulletinStatus.PUBLISHED, 1, 1)]  # no row changed


def test_withdrawn_bulletins_get_their_tombstone_and_lose_their_page(
    settings: Settings, storage: LocalStorage
) -> None:
    (withdrawn,) = add(
        settings, 1, status=BulletinStatus.WITHDRAWN, revision=2, rendered_revision=2
    )
    # Withdrawn before it was ever rendered: no tombstone may reveal it existed.
    (never_public,) = add(
        settings, 1, status=BulletinStatus.WITHDRAWN, revision=2, rendered_revision=2,
        rendered_at=None,
    )  # fmt: skip
    storage.put(file_for(page_of(withdrawn)), OLD_HTML)  # left over: must go

    report = rebuild_pages(settings, storage, PageRenderer(settings), [withdrawn, never_public])

    assert report == BatchReport(pages=0, tombstones=1, skipped=1)
    tombstone = storage.get(tombstone_for(page_of(withdrawn)))
    assert tombstone is not None and "đã gỡ bỏ bản tin này".encode() in tombstone
    assert storage.get(file_for(page_of(withdrawn))) is None
    assert storage.get(tombstone_for(page_of(never_public))) is None


def test_a_correction_committed_while_the_batch_renders_is_not_overwritten(
    settings: Settings, storage: LocalStorage
) -> None:
    """The race the write lock closes: loaded at revision 1, corrected and re-rendered at
    revision 2 before the batch writes. The batch must not put revision 1 back."""
    first, racing, last = add(settings, 3)
    newer = b"<p>revision 2, written by its own render</p>"

    class CorrectedMidway(PageRenderer):
        def article(self, bulletin: Bulletin, documents: Sequence[Document] = ()) -> str:
            if bulletin.id == racing:
                with session_scope(settings) as session:
                    session.execute(
                        update(Bulletin)
                        .where(Bulletin.id == racing)
                        .values(revision=2, rendered_revision=2, title="Đã đính chính")
                    )
                storage.put(file_for(page_of(racing)), newer)
            return super().article(bulletin, documents)

    report = rebuild_pages(settings, storage, CorrectedMidway(settings), [first, racing, last])

    assert report == BatchReport(pages=2, tombstones=0, skipped=1)
    assert storage.get(file_for(page_of(racing))) == newer
    assert storage.get(file_for(page_of(first))) is not None


def test_missing_ids_are_skipped(settings: Settings, storage: LocalStorage) -> None:
    (present,) = add(settings, 1)
    report = rebuild_pages(settings, storage, PageRenderer(settings), [present, 10_000])
    assert report == BatchReport(pages=1, skipped=1)


# -- progress ------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server (never the shared one on 6379)."""
    process, url = start_redis(tmp_path / "redis")
    yield url
    process.terminate()
    process.wait(10)


def test_a_redelivered_batch_counts_once(redis_url: str) -> None:
    from redis import Redis

    redis = Redis.from_url(redis_url)
    record_batch(redis, "run", 0, BatchReport(pages=200, skipped=50))
    record_batch(redis, "run", 1, BatchReport(pages=10, tombstones=2))
    record_batch(redis, "run", 0, BatchReport(pages=200, skipped=50))  # the same batch again
    record_batch(redis, "other-run", 0, BatchReport(pages=1))

    finished, counts = read_progress(redis, "run")

    assert finished == 2
    assert counts == BatchReport(pages=210, tombstones=2, skipped=50)
    assert counts.done == 262
    assert 0 < redis.ttl("bantin:rebuild:run:counts") <= 24 * 3600


class _Builds:
    """A refresher stand-in whose feed worker runs a round of up to `speed` requested builds
    each time it is polled, oldest request first (a build in `rounds` takes that many,
    recording PARTIAL until its last); records the most builds ever unfinished."""

    def __init__(
        self, speed: int, stuck: frozenset[Any] = frozenset(), rounds: dict[Any, int] | None = None
    ) -> None:
        self.speed, self.stuck, self.rounds = speed, stuck, rounds or {}
        self.counts: dict[Any, int] = {}
        self.queue: list[Any] = []
        self.order: list[Any] = []
        self.most = 0

    def request_many(self, wanted: list[tuple[Any, Any]]) -> int:
        self.queue += [target for _job, target in wanted]
        self.order += [target for _job, target in wanted]
        self.most = max(self.most, len(self.queue))
        return len(wanted)

    def builds_many(self, wanted: list[tuple[Any, Any]]) -> list[int]:
        done = [t for t in self.queue if t not in self.stuck][: self.speed]
        for target in done:
            self.counts[target] = self.counts.get(target, 0) + 1
            if self.counts[target] >= self.rounds.get(target, 1):
                self.queue.remove(target)
        return [self.counts.get(target, 0) for _job, target in wanted]

    def built_many(self, job: Any, targets: list[Any]) -> list[str]:
        return [
            PARTIAL if self.counts.get(t, 0) < self.rounds.get(t, 1) else "whole" for t in targets
        ]


def test_archive_builds_are_requested_a_window_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.cli import rebuild

    monkeypatch.setattr(rebuild, "POLL_SECONDS", 0)
    months = [f"month-{n}" for n in range(50)]
    builds = _Builds(speed=3, rounds={"month-0": 5, "month-7": 3})
    assert rebuild._follow_archives(builds, months, 8) == 50  # type: ignore[arg-type]
    assert builds.order == months  # each once, in the order given
    assert builds.most == 8  # never more unfinished on the feed queue
    # A big month written over several rounds holds its place in the window until its last.
    assert builds.counts["month-0"] == 5 and builds.counts["month-7"] == 3


def test_archive_builds_that_never_finish_end_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli import rebuild

    monkeypatch.setattr(rebuild, "POLL_SECONDS", 0)
    monkeypatch.setattr(rebuild, "LISTINGS_TIMEOUT_SECONDS", 0.2)
    months = [f"month-{n}" for n in range(20)]
    builds = _Builds(speed=5, stuck=frozenset(months[:4]))
    # The window fills with builds that never finish: no progress, so it gives up.
    assert rebuild._follow_archives(builds, months, 4) == 0  # type: ignore[arg-type]
    assert builds.order == months[:4]
