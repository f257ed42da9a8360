"""`bantin rebuild`: re-render every page and feed from the database, after a template change.

Restart the render and feed workers first (they compile templates once per process), then
run the command against the same database and Redis. It

1. pages through the published and withdrawn bulletins, newest first, by keyset on the
   listing index (status, published_at, id): each page of ids is a short index-only query,
   whatever the archive's size, and the most read pages get the new templates first;
2. sends one `render.batch` task per page of ids (services/render/batch.py), keeping only a
   few batches queued at a time, so a bulletin published during the rebuild waits behind
   seconds of rebuild work, not all of it;
3. once every page is written (the batches also rewrite the citations of each live
   revision), asks for a rebuild of every index page and feed (the legal documents' and
   the /van-ban/ index too), and of every month of every listing's RFC 5005 archive (the
   usual single-flight requests; the archive builds rewrite every part, so the same rows
   give the same bytes), newest months first and only ARCHIVE_WINDOW unfinished at a time,
   so live publishes are not queued behind all of them;
4. shows a progress bar of pages actually written (the batch tasks count them in Redis) and
   prints the totals with the rate.

Bulletin rows are never changed. A bulletin corrected or withdrawn meanwhile is skipped by its
batch; its own render, with the new templates, writes its page.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from datetime import datetime

    from celery import Celery
    from redis import Redis

    from shared.rebuild_progress import BatchReport
    from shared.refresh import Refresher
    from shared.settings import Settings
    from shared.site import Listing

# services/cli/__init__.py imports this module on every `bantin` command: what it needs from
# SQLAlchemy, Celery, Redis and the render package is imported where it is used (0.3 s).

DEFAULT_BATCH_SIZE = 250
# Batches queued or running at once. Enough to keep a dozen render processes busy between
# two polls; few enough that a bulletin published mid-rebuild waits behind at most
# ~16 × 250 pages (about 2 s at 2,000 pages/s), not behind the whole archive.
DEFAULT_WINDOW = 16
POLL_SECONDS = 0.05
# No batch finished for this long (the task time limit, 60 s, and a margin): the workers
# are gone, or they do not load services.render.batch and drop its messages.
STALL_SECONDS = 90.0
LISTINGS_TIMEOUT_SECONDS = 60.0
# Archive month builds requested and unfinished at once: enough to keep the feed workers
# busy, few enough that a publish meanwhile is not queued behind minutes of archive builds.
ARCHIVE_WINDOW = 8
# Statuses whose page (or tombstone) is live and can be rebuilt (BulletinStatus values).
# Others have no page yet or their render is owed; the batch re-checks each row anyway.
REBUILT_STATUSES = ("published", "withdrawn")


class RebuildError(click.ClickException):
    pass


@dataclass
class RebuildReport:
    run_id: str
    batches: int = 0
    bulletins: int = 0  # ids sent
    counts: BatchReport = field(default_factory=lambda: _batch_report())
    pages_seconds: float = 0.0  # from the first batch sent to the last one finished
    listings: int = 0  # index pages and feed pairs requested
    listings_built: int = 0  # of those, builds seen to finish
    archives: int = 0  # archive months (of any listing) requested
    archives_built: int = 0  # of those, builds seen to finish
    seconds: float = 0.0  # the whole run

    @property
    def pages_per_second(self) -> float:
        written = self.counts.pages + self.counts.tombstones
        return written / self.pages_seconds if self.pages_seconds else 0.0

    def summary(self) -> str:
        c = self.counts
        lines = [
            f"rebuilt {c.pages:,} pages and {c.tombstones:,} withdrawal notices in "
            f"{self.pages_seconds:.1f} s ({self.pages_per_second:,.0f} pages/s), "
            f"{self.batches:,} batches",
            f"skipped {c.skipped:,} changed or not yet rendered (their own renders write them)",
            f"index pages and feeds: {self.listings_built} of {self.listings} rebuilt; "
            f"feed archive months: {self.archives_built} of {self.archives}; "
            f"total {self.seconds:.1f} s",
        ]
        if c.failed:
            lines.append(f"FAILED: {c.failed:,} bulletins in batches that kept failing "
                         "(see the render worker log); run the rebuild again")  # fmt: skip
        return "\n".join(lines)


def _batch_report() -> BatchReport:
    from shared.rebuild_progress import BatchReport

    return BatchReport()


def id_batches(settings: Settings, batch_size: int) -> Iterator[list[int]]:
    """Ids of every rebuilt bulletin, newest first, `batch_size` at a time.

    Keyset pagination on (status, published_at, id), the listing index: each query reads
    one page of index entries and no row. (By id it would be worse on SQLite: with the
    status filter the planner sorts the whole covering index for every page, 25 ms a page
    at 100k rows and growing; measured.) Each page is its own short transaction, so a long
    rebuild holds back no WAL checkpoint or vacuum.
    """
    from sqlalchemy import literal, select, tuple_

    from shared.db import session_factory
    from shared.models import Bulletin

    key = tuple_(Bulletin.published_at, Bulletin.id)
    for status in REBUILT_STATUSES:
        after: tuple[datetime, int] | None = None
        while True:
            query = (
                select(Bulletin.published_at, Bulletin.id)
                .where(Bulletin.status == status)
                .order_by(Bulletin.published_at.desc(), Bulletin.id.desc())
                .limit(batch_size)
            )
            if after is not None:
                # Typed explicitly: an untyped tuple element would bind as a plain DateTime,
                # skipping UTCDateTime's conversion to naive UTC.
                moment = literal(after[0], Bulletin.published_at.type)
                query = query.where(key < tuple_(moment, after[1]))
            with session_factory(settings)() as session:
                rows = session.execute(query).all()
            if not rows:
                break
            yield [row.id for row in rows]
            after = (rows[-1].published_at, rows[-1].id)
            if len(rows) < batch_size:
                break


def count_rebuilt(settings: Settings) -> int:
    from sqlalchemy import func, select

    from shared.db import session_factory
    from shared.models import Bulletin

    with session_factory(settings)() as session:
        query = select(func.count()).where(Bulletin.status.in_(REBUILT_STATUSES))
        return int(session.scalar(query) or 0)


def run_rebuild(
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    window: int = DEFAULT_WINDOW,
    stall_seconds: float = STALL_SECONDS,
) -> RebuildReport:
    """Rebuild every page and feed (see the module docstring); returns what was done."""
    from redis import Redis

    from shared.celery_app import create_celery_app

    started = time.perf_counter()
    celery = create_celery_app(settings)
    redis = Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=5)
    report = RebuildReport(run_id=uuid.uuid4().hex[:12])
    try:
        total = count_rebuilt(settings)
        pages_started = time.perf_counter()
        follow = (celery, redis, settings, report, batch_size, window, stall_seconds)
        if progress:
            with click.progressbar(length=total, label="Rebuilding pages", show_pos=True) as bar:
                shown = _send_and_follow(*follow, bar)
                bar.update(max(0, total - shown))  # rows that changed status meanwhile
        else:
            _send_and_follow(*follow, None)
        report.pages_seconds = time.perf_counter() - pages_started
        _rebuild_listings(settings, redis, celery, report)
    finally:
        redis.close()
        celery.close()
    report.seconds = time.perf_counter() - started
    return report


def _send_and_follow(
    celery: Celery,
    redis: Redis,
    settings: Settings,
    report: RebuildReport,
    batch_size: int,
    window: int,
    stall_seconds: float,
    bar: Any,
) -> int:
    """Send batches, at most `window` unfinished at once, until all are done; returns the
    count the progress bar shows."""
    from shared.celery_app import RENDER_BATCH
    from shared.rebuild_progress import read_progress

    batches = id_batches(settings, batch_size)
    exhausted = False
    shown = 0
    last_change, last_finished = time.monotonic(), -1
    while True:
        finished, counts = read_progress(redis, report.run_id)
        while not exhausted and report.batches - finished < window:
            ids = next(batches, None)
            if ids is None:
                exhausted = True
                break
            celery.send_task(RENDER_BATCH, args=[report.run_id, report.batches, ids])
            report.batches += 1
            report.bulletins += len(ids)
        if bar is not None and counts.done > shown:
            bar.update(counts.done - shown)
            shown = counts.done
        if exhausted and finished >= report.batches:
            report.counts = counts
            return shown
        now = time.monotonic()
        if finished != last_finished:
            last_change, last_finished = now, finished
        elif now - last_change > stall_seconds:
            raise RebuildError(
                f"no batch finished for {stall_seconds:.0f} s ({finished} of {report.batches} "
                "done): are the render workers running, and do they load services.render.batch?"
            )
        time.sleep(POLL_SECONDS)


def _rebuild_listings(
    settings: Settings,
    redis: Redis,
    celery: Celery,
    report: RebuildReport,
    archive_window: int = ARCHIVE_WINDOW,
) -> None:
    """Request every index page and feed, then every archive month a window at a time, and
    wait (a while) for those builds to finish."""
    from services.feed.archives import forget_parts, recorded_months
    from shared.db import session_factory
    from shared.listings import all_listings, month_keys
    from shared.refresh import Job, Refresher
    from shared.site import DOCUMENTS, archive

    refresher = Refresher(redis, celery)
    with session_factory(settings)() as session:
        listings = all_listings(session)
        # Every month with bulletins, and every month built before (now empty: its build
        # deletes its files). Index lookups only.
        months = {
            listing: sorted(set(month_keys(session, listing)) | recorded_months(redis, listing))
            for listing in listings
        }
    # Newest months first (the most read), each listing's in turn.
    archives = [
        archive(listing, key)
        for key in sorted({k for keys in months.values() for k in keys}, reverse=True)
        for listing in listings
        if key in months[listing]
    ]
    forget_parts(redis, archives)
    # Every listing's page and feeds (the documents' too: all_listings names every document
    # a revision cites, the citations the page batches have just written), and /van-ban/.
    jobs = [(job, listing) for listing in listings for job in Job] + [(Job.PAGE, DOCUMENTS)]
    # A build counts once it finishes after the request: its `builds` counter moves. (A build
    # already running at the request moves it too; it then builds once more by itself.)
    before = dict(zip(jobs, refresher.builds_many(jobs), strict=True))
    for start in range(0, len(jobs), 500):
        refresher.request_many(jobs[start : start + 500])
    report.listings = len(listings)
    report.archives = len(archives)
    report.archives_built = _follow_archives(refresher, archives, archive_window)
    # The index pages and feeds get their own minute once the archives are done: on a big
    # site their builds queue behind the archive months' on the same workers.
    deadline = time.monotonic() + LISTINGS_TIMEOUT_SECONDS
    waiting = set(jobs)
    while waiting:
        pending = list(waiting)
        waiting = {
            key
            for key, builds in zip(pending, refresher.builds_many(pending), strict=True)
            if builds <= before[key]
        }
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    report.listings_built = sum(
        1 for listing in listings if all((job, listing) not in waiting for job in Job)
    )


def _follow_archives(refresher: Refresher, archives: list[Listing], window: int) -> int:
    """Request the archive month builds `archives`, at most `window` unfinished at once (a
    publish meanwhile waits on the feed queue behind those, not behind every month of the
    site); returns how many were seen to finish. Gives up when none finished for
    LISTINGS_TIMEOUT_SECONDS."""
    from services.feed.archives import PARTIAL
    from shared.refresh import Job

    queued = list(archives)
    outstanding: dict[Listing, int] = {}  # target -> its build count when requested
    finished = 0
    last_progress = time.monotonic()
    while queued or outstanding:
        if outstanding:
            targets = list(outstanding)
            counts = dict(
                zip(targets, refresher.builds_many([(Job.FEED, t) for t in targets]), strict=True)
            )
            moved = [t for t in targets if counts[t] > outstanding[t]]
            for target, fingerprint in zip(
                moved, refresher.built_many(Job.FEED, moved), strict=True
            ):
                last_progress = time.monotonic()
                if fingerprint == PARTIAL:  # a big month, part way: it goes round again
                    outstanding[target] = counts[target]
                    continue
                del outstanding[target]
                finished += 1
        room = queued[: max(0, window - len(outstanding))]
        if room:
            del queued[: len(room)]
            wanted = [(Job.FEED, target) for target in room]
            outstanding |= dict(zip(room, refresher.builds_many(wanted), strict=True))
            refresher.request_many(wanted)
        if time.monotonic() - last_progress > LISTINGS_TIMEOUT_SECONDS:
            break
        if outstanding:
            time.sleep(POLL_SECONDS)
    return finished


@click.command("rebuild")
@click.option("--batch-size", type=click.IntRange(1, 5000), default=DEFAULT_BATCH_SIZE,
              show_default=True, help="Bulletins per render task.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs and scripts).")
def rebuild(batch_size: int, no_progress: bool) -> None:
    """Re-render every page and feed from the database (after a template change).

    Restart the render and feed workers first so they load the new templates. Bulletins
    are not changed; one corrected meanwhile gets its page from its own render.
    """
    from shared.settings import get_settings

    report = run_rebuild(get_settings(), batch_size=batch_size, progress=not no_progress)
    click.echo(report.summary())
    if report.counts.failed:
        raise SystemExit(1)


COMMANDS = [rebuild]
