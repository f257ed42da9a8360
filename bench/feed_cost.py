"""Scenario 4: the cost of building one agency's and one document's feeds as the archive
grows, 1k → 1M.

    python -m bench.feed_cost [--size N] [--quick] [--postgres]

One database per size, 1k, 10k, 100k and 1M published bulletins (bench/archive.py; quick
mode stops at 100k, --size caps the largest). In each, the agency feed is built exactly as
the feed worker builds it, `services.feed.jobs.write_feeds` (the listing query, feedgen for
RSS and Atom, both files written): the median of 30 builds after 5 warm-up builds, the
sizes taking turns so that other load on the machine falls on all of them alike. The feed
shows the newest 50 items however large the archive, so the cost should stay flat; the
listing query's plan is checked at the largest size. (Separate databases cost 11% more
rows than growing one, and are what makes the turns possible.)

The document measured is the archive's popular decision (bench/archive.py: cited by every
20th bulletin, 50 citers at 1k, 50,000 at 1M): its listing joins `citations` to the live
revision of `bulletins` and must walk `ix_citation_listing` newest first and stop after 50,
not sort all its citers. Its builds take turns with the agency's, the same way.

Also, once per run, the CPU of citation extraction per bulletin
(`shared.citations.extract_bulletin`, which the render step runs on every revision): on the
sample bulletin and on a 20 KB body.

No Redis or worker is involved: `write_feeds` touches only the database and the site
directory (its Runtime carries a Redis client that never connects).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import event, func, select

from bench.archive import POPULAR_KEY, populate
from bench.core import Options, Result, table
from services.cli.client import parse_text_bulletin
from services.feed.jobs import write_feeds
from shared.celery_app import create_celery_app
from shared.db import engine_for
from shared.models import Citation
from shared.runtime import Runtime, build_runtime
from shared.sanitize import text_to_html
from shared.settings import Settings
from shared.site import Listing, ListingKind, document

NAME = "4 feed cost"
SIZES = (1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = SIZES[:3]
RUNS, WARMUP = 30, 5
PER_TURN = 1  # builds per size per round: the sizes alternate build by build
MAX_RATIO = 1.2
AGENCY = Listing(ListingKind.AGENCY, "arch-01")  # one of the archive's 20 agencies
DOCUMENT = document(POPULAR_KEY)  # cited by 5% of the archive's bulletins
# What each listing's query must walk (SQLite names it in its plan, PostgreSQL too).
INDEXES = {AGENCY: "ix_bulletin_listing_agency", DOCUMENT: "ix_citation_listing"}
LABELS = {AGENCY: "agency", DOCUMENT: "document"}
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "000_4fbfac1c975a2018.txt"
EXTRACT_RUNS = 200
LONG_BODY_BYTES = 20_000
UNUSED_REDIS = "redis://127.0.0.1:1/0"  # write_feeds never talks to Redis
Key = TypeVar("Key")


def sizes_for(options: Options) -> tuple[int, ...]:
    sizes: tuple[int, ...] = QUICK_SIZES if options.quick else SIZES
    if options.size:
        sizes = tuple(s for s in SIZES if s < options.size) + (options.size,)
    return sizes


def run(options: Options) -> list[Result]:
    root = (options.workdir / "feed-cost").resolve()
    shutil.rmtree(root, ignore_errors=True)
    sizes = sizes_for(options)
    runtimes: dict[int, Runtime] = {}
    notes: dict[int, str] = {}
    citers: dict[int, int] = {}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        for size in sizes:
            database_url = stack.enter_context(_database(options))
            settings = Settings(data_dir=root / str(size), database_url=database_url,
                                redis_url=UNUSED_REDIS)  # fmt: skip
            started = time.perf_counter()
            populate(settings, size)
            notes[size] = f"archive written in {time.perf_counter() - started:.1f} s"
            runtimes[size] = build_runtime(settings, create_celery_app(settings))
            citers[size] = _citers(runtimes[size])
            _settle(runtimes[size])
        builds = {
            (listing, size): partial(write_feeds, runtime, listing)
            for size, runtime in runtimes.items()
            for listing in (AGENCY, DOCUMENT)
        }
        timings = _measure_interleaved(builds)
        queries = {(listing, size): _query_ms(runtimes[size], listing) for listing, size in builds}
        plans = {listing: _plan(runtimes[sizes[-1]], listing) for listing in (AGENCY, DOCUMENT)}
    results = []
    for listing in (AGENCY, DOCUMENT):
        label = LABELS[listing]
        for size in sizes:
            wall, cpu = timings[listing, size]
            shown = f"{citers[size]:,} citing bulletins; " if listing is DOCUMENT else ""
            results.append(
                Result(NAME, f"{label} feed build, {size:,} bulletins", wall, "ms", "", None,
                       f"{shown}CPU {cpu:.2f} ms, listing query {queries[listing, size]:.2f} ms; "
                       f"{notes[size]}")
            )  # fmt: skip
        results.append(_flatness(listing, sizes, timings, plans[listing]))
    results += _extraction()
    return results


def _flatness(
    listing: Listing,
    sizes: tuple[int, ...],
    timings: Mapping[tuple[Listing, int], tuple[float, float]],
    plan: str,
) -> Result:
    """Slowest / fastest median build of one listing across the sizes, and its query plan."""
    medians = [timings[listing, size][0] for size in sizes]
    ratio = max(medians) / min(medians)
    cpu_medians = [timings[listing, size][1] for size in sizes]
    cpu_ratio = max(cpu_medians) / min(cpu_medians)
    sorts = "TEMP B-TREE" in plan or re.search(r"\bSort\b", plan)  # SQLite / PostgreSQL
    indexed = INDEXES[listing] in plan and not sorts
    label = LABELS[listing]
    verdict = f"walks the {label} index, no sort" if indexed else "DOES NOT use the index"
    return Result(
        NAME, f"{label}: slowest / fastest, {sizes[0]:,} to {sizes[-1]:,}", ratio, "×",
        f"within 20% (ratio <= {MAX_RATIO})", ratio <= MAX_RATIO,
        f"CPU time ratio {cpu_ratio:.2f}; query plan at {sizes[-1]:,}: {verdict} ({plan})",
    )  # fmt: skip


def _citers(runtime: Runtime) -> int:
    """How many citation rows the measured document has (all live: revision 1 everywhere)."""
    with engine_for(runtime.settings).connect() as conn:
        query = select(func.count()).where(Citation.document_key == DOCUMENT.key)
        return int(conn.scalar(query) or 0)


def _extraction() -> list[Result]:
    """CPU per bulletin of citation extraction, as the render step calls it: the sample
    bulletin (title, lead, body as HTML paragraphs), and a long body of ~20 KB."""
    from shared import citations

    title, summary, body = _sample()
    long_body = body
    while len(long_body.encode()) < LONG_BODY_BYTES:
        long_body += body
    results = []
    for label, body_html in (("sample bulletin", body), ("20 KB body", long_body)):
        try:
            found = citations.extract_bulletin(title, summary, body_html)
        except NotImplementedError:
            return [Result(NAME, "citation extraction", "not implemented yet")]
        started = time.process_time()
        for _ in range(EXTRACT_RUNS):
            citations.extract_bulletin(title, summary, body_html)
        micros = (time.process_time() - started) / EXTRACT_RUNS * 1e6
        results.append(
            Result(NAME, f"citation extraction CPU per bulletin, {label}", micros, "µs", "",
                   None, f"{len(body_html.encode()):,} bytes of HTML, {len(found)} documents "
                   f"found; mean of {EXTRACT_RUNS}")
        )  # fmt: skip
    return results


def _sample() -> tuple[str, str | None, str]:
    """The sample bulletin as `bantin publish` sends it and ingest stores it: title, lead and
    the body as HTML paragraphs."""
    bulletin = parse_text_bulletin(SAMPLE.read_text(encoding="utf-8-sig"), ZoneInfo("UTC"))
    return bulletin["title"], bulletin.get("summary"), text_to_html(bulletin["body"])


def _settle(runtime: Runtime) -> None:
    """Let the archive's own writes finish before measuring.

    Writing 1M bulletins leaves ~6 GB of dirty pages; until the kernel has written them
    back, any write (the two feed files) is throttled behind them: a first 1M run measured
    44 ms a build for 9.7 ms of CPU. Fold the WAL into the database (as SQLite's own
    checkpoints do on a live site) and flush, so what is measured is the build, not the
    generator's wake.
    """
    with engine_for(runtime.settings).connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()


def _measure_interleaved(
    builds: Mapping[Key, Callable[[], Any]],
) -> dict[Key, tuple[float, float]]:
    """Median wall-clock and CPU milliseconds per build (listing and size), of RUNS builds
    after WARMUP.

    The builds take turns, so a burst of other work on the machine lands on every size
    alike instead of on whichever was measured at that moment (this machine is shared:
    measured one after another, the sizes drifted by up to 40% with no cause in the code).
    """
    for build in builds.values():
        for _ in range(WARMUP):
            build()
    walls: dict[Key, list[float]] = {key: [] for key in builds}
    cpus: dict[Key, list[float]] = {key: [] for key in builds}
    for _ in range(RUNS // PER_TURN):
        for key, build in builds.items():
            for _ in range(PER_TURN):
                wall, cpu = time.perf_counter(), time.process_time()
                build()
                walls[key].append((time.perf_counter() - wall) * 1000)
                cpus[key].append((time.process_time() - cpu) * 1000)
    return {key: (statistics.median(walls[key]), statistics.median(cpus[key]))
            for key in builds}  # fmt: skip


@contextmanager
def _statements(runtime: Runtime) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the database receives inside the block."""
    engine = engine_for(runtime.settings)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def _listing_statement(runtime: Runtime, listing: Listing) -> tuple[str, Any]:
    """The listing query write_feeds sends, as sent (the newest N, ordered: the first
    statement with an ORDER BY, as newest_bulletins runs before the archive lookups)."""
    with _statements(runtime) as seen:
        write_feeds(runtime, listing)
    return next((sql, params) for sql, params in seen if "ORDER BY" in sql.upper())


def _query_ms(runtime: Runtime, listing: Listing) -> float:
    sql, params = _listing_statement(runtime, listing)
    with engine_for(runtime.settings).connect() as conn:
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            conn.exec_driver_sql(sql, params).fetchall()
            timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _plan(runtime: Runtime, listing: Listing) -> str:
    sql, params = _listing_statement(runtime, listing)
    with engine_for(runtime.settings).connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            return "; ".join(str(row[-1]) for row in rows)
        rows = conn.exec_driver_sql("EXPLAIN " + sql, params).all()
        return "; ".join(str(row[0]).strip() for row in rows)


@contextmanager
def _database(options: Options) -> Iterator[str | None]:
    """None (SQLite in the data dir), or a fresh PostgreSQL database with --postgres."""
    if not options.postgres:
        yield None
        return
    from bench.system import postgres_database

    with postgres_database() as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None, help="largest archive (default 1M)")
    parser.add_argument("--quick", action="store_true", help="1k, 10k, 100k")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    print(table(run(Options(quick=args.quick, postgres=args.postgres, size=args.size))))


if __name__ == "__main__":
    main()
