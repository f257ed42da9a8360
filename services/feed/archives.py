"""RFC 5005 archives of a listing's feeds: every published bulletin, month by month.

Each listing (all, an agency, a category) has, per UTC month with a published bulletin, RSS
and Atom archive documents at ``/feeds/{scope}/YYYY-MM.rss|.atom`` (``shared.site.
archive_path``). The month's entries are cut oldest first by (published_at, id) into parts of
``archive_items``: part 1 at ``YYYY-MM``, then ``YYYY-MM-2`` and so on, so a growing month
only ever adds to its last part and the earlier ones stay fixed. Within a document entries
are newest first, as in the subscription feeds. Links (the ``History`` of feeds.py):
``current`` (the subscription feed), ``self``, ``prev-archive`` (the previous part, else the
last part of the previous non-empty month) and ``next-archive`` (the next part, else part 1
of the next non-empty month). The subscription feeds link the newest document (jobs.py).

Builds are coalesced like the feeds (``ListingKind.ARCHIVE``, ``Job.FEED``, on the feed
worker), one per (listing, month):

- a build reads the month's (id, revision) list (an index range; the month's summary comes
  from it and one max(updated_at)) and its neighbours (three index-only lookups), and
  writes only the parts whose fingerprint (their rows and links) differs from what it
  recorded in Redis or whose files are missing; so one publish into a big month rebuilds its
  last part, not the month. It writes one part at a time (its rows loaded, its documents
  written, its fingerprint recorded, the build lock renewed) and at most PARTS_PER_ROUND
  per round, then asks for another round. Parts past the month's end are deleted (all of
  them once it is empty).
- when the month's shape (part count, neighbours) changed, its neighbours' links may be
  wrong: it requests their builds (and the listing's feeds when it is the newest month).
  Neighbours whose shape did not change stop there.
- it records the month's fingerprint (``shared.listings.month_fingerprint``: a summary of the
  rows, their cut into parts and the neighbour links) as the build's; the listing's *check*
  (key ``@check``) recomputes it for a bounded window of months (the newest CHECK_RECENT and
  CHECK_OLDER of the others in turn, ``check_window``) and requests those that differ or
  lack a file, and every month recorded but now empty. So a check costs the same however
  old the site, and every month is checked within a bounded number of checks (a lost
  trigger on an old month, a Redis that lost everything). The reconciler's verification
  requests checks; so does a correction (it may have moved a bulletin out of a month).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from services.feed.feeds import History, build_archive
from shared.db import session_factory
from shared.listings import (
    Neighbours,
    fingerprint,
    listing_heading,
    month_count,
    month_fingerprint,
    month_keys,
    month_summary,
    month_versions,
    neighbours,
    parts_of,
    summary_of,
)
from shared.models import Bulletin
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import (
    ARCHIVE_CHECK,
    ARCHIVE_FORMATS,
    Listing,
    ListingKind,
    archive,
    archive_path,
    file_for,
)

log = logging.getLogger(__name__)

# The fingerprint a build of a month with no bulletin records (its files are gone).
EMPTY = "empty"
# What a build that left changed parts for another round records: never a month's
# fingerprint, so a check meanwhile finds the month stale.
PARTIAL = "partial"
# Changed parts one build writes (each part: up to `archive_items` rows read and two
# documents written, ~0.27 s at 500 on SQLite, measured): a month rewritten whole (a new
# `archive_items`, `bantin rebuild`) goes round several times, ~5 s each, well inside the
# task's time limit, and other builds on the feed queue run in between.
PARTS_PER_ROUND = 20
# A listing's check covers its newest months and a rotating slice of the older ones: at
# most this many rows-reading summaries per check, however many months the listing has.
CHECK_RECENT = 2
CHECK_OLDER = 2


@dataclass(frozen=True)
class Part:
    """One archive document of a month: its entries (oldest first) and its neighbours, each
    a (month, part) whose document it links."""

    month: str
    number: int
    versions: tuple[tuple[int, int], ...]  # (id, revision), oldest first
    prev: tuple[str, int] | None
    next: tuple[str, int] | None

    @property
    def fingerprint(self) -> str:
        """What the part's documents show: which bulletins at which revision, which links."""
        return f"{fingerprint(self.versions)}|{self.prev}|{self.next}"


def plan_parts(
    month: str, versions: Sequence[tuple[int, int]], per_part: int, around: Neighbours
) -> list[Part]:
    """Cut a month's (id, revision) list (oldest first) into parts of `per_part`, each
    linked to its older and newer neighbour (the months `around` it at either end)."""
    count = parts_of(len(versions), per_part)
    parts = []
    for number in range(1, count + 1):
        prev = (month, number - 1) if number > 1 else around.prev
        after = (month, number + 1) if number < count else None
        if after is None and around.next is not None:
            after = (around.next, 1)
        chunk = tuple(versions[(number - 1) * per_part : number * per_part])
        parts.append(Part(month, number, chunk, prev, after))
    return parts


def paths(listing: Listing, where: tuple[str, int] | None) -> dict[str, str] | None:
    """The URL paths, per format, of the document at (month, part)."""
    if where is None:
        return None
    return {fmt: archive_path(listing, where[0], where[1], fmt) for fmt in ARCHIVE_FORMATS}


def label(month: str, part: int) -> str:
    """The archive's name after the feed's title: "tháng 02/2011" (", phần 2")."""
    year, number = month.split("-")
    text = f"lưu trữ tháng {number}/{year}"
    return text if part == 1 else f"{text}, phần {part}"


# -- Redis bookkeeping: what each month's last build wrote --------------------------------


def _parts_key(target: Listing) -> str:
    return f"bantin:archive:parts:{target.target}"  # part number -> its fingerprint


def _shape_key(target: Listing) -> str:
    return f"bantin:archive:shape:{target.target}"  # part count and neighbours


def _months_key(listing: Listing) -> str:
    return f"bantin:archive:months:{listing.target}"  # months with documents on disk


def _cursor_key(listing: Listing) -> str:
    return f"bantin:archive:cursor:{listing.target}"  # where the next check's window starts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def recorded_months(redis: Redis, listing: Listing) -> set[str]:
    """The months of `listing` whose documents a build wrote and no build deleted."""
    return {_text(member) for member in redis.smembers(_months_key(listing))}


def forget_parts(redis: Redis, targets: Iterable[Listing]) -> None:
    """Make the next build of each archive month rewrite all its parts (`bantin rebuild`:
    the same rows then give the same bytes)."""
    keys = [_parts_key(target) for target in targets]
    if keys:
        redis.delete(*keys)


# -- builds ---------------------------------------------------------------------------------


def build(runtime: Runtime, target: Listing) -> str:
    """Run the ARCHIVE build `target`: a month, or the listing's check."""
    listing, month = target.archive_scope
    if month == ARCHIVE_CHECK:
        return check(runtime, listing)
    return write_month(runtime, listing, month)


def _present(runtime: Runtime, listing: Listing, month: str, part: int) -> bool:
    return all(
        runtime.storage.exists(file_for(archive_path(listing, month, part, fmt)))
        for fmt in ARCHIVE_FORMATS
    )


def write_month(runtime: Runtime, listing: Listing, month: str) -> str:
    """Rebuild one month of `listing`'s archive (see the module docstring); returns the
    month's fingerprint, or PARTIAL when it wrote its first PARTS_PER_ROUND changed parts
    and asked for another round to write the rest."""
    settings, storage, redis = runtime.settings, runtime.storage, runtime.redis
    target = archive(listing, month)
    per_part = settings.archive_items
    recorded = {_text(k): _text(v) for k, v in redis.hgetall(_parts_key(target)).items()}
    written: list[Part] = []
    with session_factory(settings)() as session:
        rows = month_versions(session, listing, month)
        # The fingerprint the check will compute, from the rows just read and the newest
        # updated_at (a change between the two reads also requested a build, which runs
        # after this one and sees it).
        summary = summary_of(session, listing, month, rows) if rows else None
        around = neighbours(session, listing, month, per_part)
        parts = plan_parts(month, rows, per_part, around)
        changed = [
            part
            for part in parts
            if recorded.get(str(part.number)) != part.fingerprint
            or not _present(runtime, listing, month, part.number)
        ]
        title = listing_heading(session, listing, settings.site_title) if changed else ""
        # One part at a time: its rows loaded, its documents written, its fingerprint saved,
        # the build's lock renewed. A killed build keeps what it wrote, and a big month's
        # build never holds the lock longer than a part takes.
        for part in changed[:PARTS_PER_ROUND]:
            loaded = _bulletins(session, [i for i, _ in part.versions])
            shown = [loaded[i] for i, _ in reversed(part.versions) if i in loaded]
            history = History(
                archive=paths(listing, (month, part.number)),
                prev=paths(listing, part.prev),
                next=paths(listing, part.next),
                label=label(month, part.number),
            )
            documents = build_archive(listing, title, shown, settings, history)
            for fmt, body in documents.by_format().items():
                storage.put(file_for(archive_path(listing, month, part.number, fmt)), body)
            redis.hset(_parts_key(target), str(part.number), part.fingerprint)
            runtime.refresher.extend(Job.FEED, target)
            written.append(part)

    # Parts left over from when the month was bigger (all of them once it is empty).
    number, removed = len(parts) + 1, []
    while (
        any(
            storage.exists(file_for(archive_path(listing, month, number, fmt)))
            for fmt in ARCHIVE_FORMATS
        )
        or str(number) in recorded
    ):
        for fmt in ARCHIVE_FORMATS:
            storage.delete(file_for(archive_path(listing, month, number, fmt)))
        removed.append(str(number))
        number += 1

    shape = f"{len(parts)}|{around.prev}|{around.next}"
    pipe = redis.pipeline()
    if removed:
        pipe.hdel(_parts_key(target), *removed)
    if parts:
        pipe.sadd(_months_key(listing), month)
    else:
        pipe.srem(_months_key(listing), month)
    pipe.getset(_shape_key(target), shape)
    old_shape = pipe.execute()[-1]
    if old_shape is None or _text(old_shape) != shape:
        _relink(runtime, listing, around)

    log.info("archive built: %s %s, %d entries, %d of %d parts written, %d removed",
             listing.target, month, len(rows), len(written), len(parts), len(removed),
             extra={"listing": target.target})  # fmt: skip
    if len(changed) > len(written):
        # Another round (this build holds the lock: the request only counts, and the
        # builder goes round again) writes the rest.
        runtime.refresher.request(Job.FEED, target)
        return PARTIAL
    if summary is None:
        return EMPTY
    return month_fingerprint(summary, around, per_part)


def _bulletins(session: Session, ids: list[int]) -> dict[int, Bulletin]:
    """The rows to show, by id (agencies joined: Bulletin.agency is lazy="joined"), without
    body_source, the one large column no feed shows (raiseload: a use fails loudly)."""
    found: dict[int, Bulletin] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        query = (
            select(Bulletin)
            .options(defer(Bulletin.body_source, raiseload=True))
            .where(Bulletin.id.in_(ids[start : start + 500]))
        )
        found |= {bulletin.id: bulletin for bulletin in session.scalars(query)}
    return found


def _relink(runtime: Runtime, listing: Listing, around: Neighbours) -> None:
    """A month's part count or neighbours changed: the months beside it link to it, and when
    it is the newest, so do the listing's feeds."""
    wanted = []
    if around.prev is not None:
        wanted.append((Job.FEED, archive(listing, around.prev[0])))
    if around.next is not None:
        wanted.append((Job.FEED, archive(listing, around.next)))
    else:
        wanted.append((Job.FEED, listing))
    runtime.refresher.request_many(wanted)


def check_window(keys: Sequence[str], start: int) -> tuple[list[str], int]:
    """The months one check of a listing covers, given its non-empty months (oldest
    first): the newest CHECK_RECENT (where publishing happens) and CHECK_OLDER of the
    others from `start` on, round their list. Returns them (oldest first) and where the
    next check starts, so every month is checked within a bounded number of checks."""
    recent, older = list(keys[-CHECK_RECENT:]), list(keys[:-CHECK_RECENT])
    if len(older) <= CHECK_OLDER:
        return list(keys), 0
    start %= len(older)
    chosen = (older + older)[start : start + CHECK_OLDER]
    return sorted({*chosen, *recent}), (start + CHECK_OLDER) % len(older)


def stale_months(runtime: Runtime, session: Session, listing: Listing) -> tuple[list[str], str]:
    """Of the months in this check's window (`check_window`), those whose archive needs a
    build: built from other rows, cut or links than the database has now (or never, or
    Redis lost it), or missing a file; and every month recorded but now empty. Also
    returns a digest of the checked months' fingerprints.

    Its cost is bounded whatever the listing's size: an index lookup per month to list
    them, and the rows of at most CHECK_RECENT + CHECK_OLDER months."""
    per_part = runtime.settings.archive_items
    keys = month_keys(session, listing)
    cursor = _cursor_key(listing)
    chosen, after = check_window(keys, int(runtime.redis.get(cursor) or 0))
    runtime.redis.set(cursor, after)
    position = {key: i for i, key in enumerate(keys)}
    wanted: dict[str, str] = {}
    parts: dict[str, int] = {}
    for key in chosen:
        i = position[key]
        summary = month_summary(session, listing, key)
        prev = None
        if i > 0:
            prev = (keys[i - 1], parts_of(month_count(session, listing, keys[i - 1]), per_part))
        around = Neighbours(prev, keys[i + 1] if i + 1 < len(keys) else None)
        wanted[key] = month_fingerprint(summary, around, per_part)
        parts[key] = parts_of(summary.count, per_part)
    built = runtime.refresher.built_many(Job.FEED, [archive(listing, key) for key in chosen])
    stale = [
        key
        for key, have in zip(chosen, built, strict=True)
        if have != wanted[key]
        or not all(_present(runtime, listing, key, part) for part in range(1, parts[key] + 1))
    ]
    stale += sorted(recorded_months(runtime.redis, listing) - set(keys))
    digest = hashlib.blake2b(digest_size=12)
    for key, value in wanted.items():
        digest.update(f"{key}={value};".encode())
    return stale, digest.hexdigest()


def check(runtime: Runtime, listing: Listing) -> str:
    """Request a build of every stale month in this check's window of `listing`; returns
    the checked months' digest."""
    with session_factory(runtime.settings)() as session:
        stale, digest = stale_months(runtime, session, listing)
    if stale:
        runtime.refresher.request_many([(Job.FEED, archive(listing, key)) for key in stale])
        log.info("archive check: %s, %d stale months", listing.target, len(stale),
                 extra={"listing": listing.target})  # fmt: skip
    return digest


def newest_archive(listing: Listing, newest: tuple[str, int] | None) -> dict[str, str] | None:
    """The paths of the listing's newest archive document, from `listings.newest_month`."""
    if newest is None or listing.kind is ListingKind.ARCHIVE:
        return None
    return paths(listing, newest)
