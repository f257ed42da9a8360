"""Archive month builds and checks against SQLite, a real (private) Redis and a site
directory: a check reads a bounded window of months and still covers them all in turn; a
big month is written a part at a time, each part recorded as soon as it is written."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from services.feed import archives
from services.feed.archives import (
    CHECK_OLDER,
    CHECK_RECENT,
    PARTIAL,
    check,
    check_window,
    stale_months,
    write_month,
)
from shared.celery_app import create_celery_app
from shared.db import create_schema, session_factory, session_scope
from shared.listings import month_keys
from shared.models import Agency, Bulletin, BulletinStatus
from shared.refresh import Job
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from shared.site import ALL, archive, archive_path, file_for

MONTHS = [f"2011-{n:02d}" for n in range(1, 11)]
BIG = "2011-03"  # 7 bulletins: 4 parts of 2


def add(settings: Settings, month: str, count: int) -> None:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    with session_scope(settings) as session:
        agency = session.query(Agency).first()
        assert agency is not None
        for i in range(count):
            session.add(
                Bulletin(
                    agency_id=agency.id, slug=f"b-{month}-{i}", title=f"Bản tin {month} {i}",
                    body_format="text", body_source="b", body_html="<p>b</p>",
                    published_at=start + timedelta(hours=i + 1), status=BulletinStatus.PUBLISHED,
                )
            )  # fmt: skip


@pytest.fixture
def runtime(private_redis: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis, archive_items=2)
    create_schema(settings)
    with session_scope(settings) as session:
        session.add(Agency(slug="so-y-te", name="Sở Y tế"))
    for month in MONTHS:
        add(settings, month, 7 if month == BIG else 1)
    Redis.from_url(private_redis).flushdb()  # before the Celery app declares its queues
    runtime = build_runtime(settings, create_celery_app(settings))
    yield runtime
    runtime.redis.close()


def requested(runtime: Runtime) -> set[str]:
    """The archive months some request asked for (no worker runs here)."""
    keys = [f"bantin:refresh:feed:{archive(ALL, m).target}:wanted" for m in MONTHS]
    return {m for m, n in zip(MONTHS, runtime.redis.mget(keys), strict=True) if n}


def build(runtime: Runtime, month: str) -> str:
    """One build of a month as the feed worker runs it (its fingerprint recorded); a build
    that goes round again is run again, as its task would."""
    target = archive(ALL, month)
    while (
        runtime.refresher.run(Job.FEED, target, lambda: write_month(runtime, ALL, month))
        is not None
    ):
        pass
    return runtime.refresher.built(Job.FEED, target) or ""


def test_a_window_holds_the_newest_months_and_rotates_through_the_rest() -> None:
    keys = [f"20{y:02d}-01" for y in range(10, 30)]
    seen: set[str] = set()
    start = 0
    for _ in range(-(-(len(keys) - CHECK_RECENT) // CHECK_OLDER)):
        chosen, start = check_window(keys, start)
        assert len(chosen) == CHECK_RECENT + CHECK_OLDER
        assert set(keys[-CHECK_RECENT:]) <= set(chosen) and chosen == sorted(chosen)
        seen |= set(chosen)
    assert seen == set(keys)  # every month within that many checks
    assert check_window(keys[:3], 7) == (keys[:3], 0)  # few months: all of them


def test_a_check_reads_a_bounded_window_and_in_turn_finds_every_stale_month(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    summary = archives.month_summary

    def counted(session: Any, listing: Any, key: str) -> Any:
        read.append(key)
        return summary(session, listing, key)

    monkeypatch.setattr(archives, "month_summary", counted)
    # Redis knows nothing (a flush): each check asks for its window's months.
    check(runtime, ALL)
    assert len(read) == CHECK_RECENT + CHECK_OLDER  # rows read of 4 months, not 10
    assert requested(runtime) == set(read) and set(MONTHS[-CHECK_RECENT:]) <= set(read)
    checks = -(-(len(MONTHS) - CHECK_RECENT) // CHECK_OLDER)
    for _ in range(checks - 1):
        check(runtime, ALL)
    assert len(read) == checks * (CHECK_RECENT + CHECK_OLDER)
    assert requested(runtime) == set(MONTHS)  # everything, within a bounded number of checks

    # Built, a round of checks finds nothing; a bulletin added to the oldest month without
    # a request (a lost trigger) is found within a round.
    for month in MONTHS:
        build(runtime, month)
    runtime.redis.delete(*[f"bantin:refresh:feed:{archive(ALL, m).target}:wanted" for m in MONTHS])
    for _ in range(checks):
        check(runtime, ALL)
    assert requested(runtime) == set()
    add(runtime.settings, MONTHS[0], 1)
    for _ in range(checks):
        check(runtime, ALL)
    assert requested(runtime) == {MONTHS[0]}


def test_a_big_month_is_written_a_part_at_a_time_over_rounds(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "PARTS_PER_ROUND", 3)
    target = archive(ALL, BIG)
    parts_key = f"bantin:archive:parts:{target.target}"
    lock = f"bantin:refresh:feed:{target.target}:lock"
    runtime.redis.set(lock, "1", ex=2)  # the builder's lock, nearly expired
    assert write_month(runtime, ALL, BIG) == PARTIAL
    assert sorted(runtime.redis.hkeys(parts_key)) == [b"1", b"2", b"3"]
    assert runtime.redis.ttl(lock) > 2  # renewed as it went
    assert int(runtime.redis.get(f"bantin:refresh:feed:{target.target}:wanted") or 0) == 1
    # The next round writes the fourth part only, and records the month's fingerprint.
    put = runtime.storage.put
    written: list[str] = []

    def recording(path: Any, body: bytes) -> None:
        written.append(str(path))
        put(path, body)

    monkeypatch.setattr(runtime.storage, "put", recording)
    finished = write_month(runtime, ALL, BIG)
    assert finished != PARTIAL
    assert {Path(p).name for p in written} == {"2011-03-4.rss", "2011-03-4.atom"}
    runtime.redis.set(f"bantin:refresh:feed:{target.target}:built", finished)
    with session_factory(runtime.settings)() as session:
        assert BIG not in stale_months(runtime, session, ALL)[0]


def test_a_build_that_fails_midway_keeps_the_parts_it_wrote(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts_key = f"bantin:archive:parts:{archive(ALL, BIG).target}"
    put = runtime.storage.put

    def failing(path: Any, body: bytes) -> None:
        if "2011-03-2." in str(path):
            raise OSError("disk full")
        put(path, body)

    monkeypatch.setattr(runtime.storage, "put", failing)
    with pytest.raises(OSError):
        write_month(runtime, ALL, BIG)
    assert runtime.redis.hkeys(parts_key) == [b"1"]  # recorded before the failure
    monkeypatch.setattr(runtime.storage, "put", put)
    first = file_for(archive_path(ALL, BIG, 1, "atom"))
    inode = (runtime.settings.resolved_site_dir / first).stat().st_ino
    write_month(runtime, ALL, BIG)
    assert (runtime.settings.resolved_site_dir / first).stat().st_ino == inode  # not rewritten
    assert sorted(runtime.redis.hkeys(parts_key)) == [b"1", b"2", b"3", b"4"]


def test_a_new_archive_items_makes_every_month_stale(runtime: Runtime) -> None:
    for month in MONTHS:
        build(runtime, month)
    with session_factory(runtime.settings)() as session:
        keys = month_keys(session, ALL)
        assert stale_months(runtime, session, ALL)[0] == []
        # 3 per part: most months keep one part, yet their documents' cut changed.
        settings = runtime.settings.model_copy(update={"archive_items": 3})
        wider = dataclasses.replace(runtime, settings=settings)
        stale: set[str] = set()
        for _ in range(-(-(len(keys) - CHECK_RECENT) // CHECK_OLDER)):
            stale |= set(stale_months(wider, session, ALL)[0])
    assert stale == set(MONTHS)
