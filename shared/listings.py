"""The queries behind every index page and feed (the newest published bulletins of a
listing) and behind its RFC 5005 archive (the listing's bulletins month by month)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from shared.models import Agency, Bulletin, BulletinStatus, Category, Citation, LegalDocument
from shared.site import ALL, Listing, ListingKind, document

# How many documents the /van-ban/ index shows, most cited first.
DOCUMENTS_INDEX_ITEMS = 100


def _published(listing: Listing, *columns: Any) -> Select[Any]:
    """The listing's published bulletins. Each filter matches a composite index (status /
    agency / category, then published_at, id), so the cost stays the same however large the
    archive grows, and a published_at range reads only that range.

    A document's listing is its citations joined to the bulletins whose live revision they
    belong to (SPEC "the data rule"): it is ordered and ranged on the citation's own
    published_at and bulletin_id (`_time`, `_id`), so the query walks ix_citation_listing
    and looks each bulletin up by id, stopping after N."""
    query = select(*columns)
    if listing.kind is ListingKind.DOCUMENT:
        query = query.select_from(Citation).join(Bulletin, _live_citation())
        query = query.where(Citation.document_key == listing.key)
    query = query.where(Bulletin.status == BulletinStatus.PUBLISHED)
    if listing.kind is ListingKind.AGENCY:
        agency_id = select(Agency.id).where(Agency.slug == listing.key).scalar_subquery()
        query = query.where(Bulletin.agency_id == agency_id)
    elif listing.kind is ListingKind.CATEGORY:
        query = query.where(Bulletin.category_slug == listing.key)
    return query


def _live_citation() -> Any:
    """A citation row of the revision whose page is live."""
    return and_(Bulletin.id == Citation.bulletin_id, Bulletin.cited_revision == Citation.revision)


def _time(listing: Listing) -> Any:
    """The column a listing is ordered and ranged by (its index's)."""
    return Citation.published_at if listing.kind is ListingKind.DOCUMENT else Bulletin.published_at


def _id(listing: Listing) -> Any:
    """The tie-break after `_time` (its index's last column)."""
    return Citation.bulletin_id if listing.kind is ListingKind.DOCUMENT else Bulletin.id


def _newest(listing: Listing, *columns: Any) -> Select[Any]:
    return _published(listing, *columns).order_by(_time(listing).desc(), _id(listing).desc())


def newest_bulletins(session: Session, listing: Listing, limit: int) -> list[Bulletin]:
    """The newest `limit` published bulletins, newest first."""
    return list(session.scalars(_newest(listing, Bulletin).limit(limit)))


def newest_versions(session: Session, listing: Listing, limit: int) -> list[tuple[int, int]]:
    """(id, revision) of the same rows as `newest_bulletins`, without loading their bodies."""
    rows = session.execute(_newest(listing, Bulletin.id, Bulletin.revision).limit(limit))
    return [(row.id, row.revision) for row in rows]


def fingerprint(versions: Iterable[tuple[int, int]]) -> str:
    """What a listing shows, in a few bytes: which bulletins, in which order, which revision.

    Builders record it; the reconciler recomputes it from the database, and a difference
    means the built page or feed is stale (a lost trigger, a Redis restart, a killed build).
    """
    digest = hashlib.blake2b(digest_size=12)
    for bulletin_id, revision in versions:
        digest.update(f"{bulletin_id}:{revision};".encode())
    return digest.hexdigest()


def versions_of(bulletins: Iterable[Bulletin]) -> list[tuple[int, int]]:
    return [(b.id, b.revision) for b in bulletins]


def all_listings(session: Session) -> list[Listing]:
    """Every listing the site has: all, each agency, each category, and each document any
    revision ever cited (one that lost its last citer still needs its page rebuilt empty)."""
    agencies = session.scalars(select(Agency.slug).order_by(Agency.slug))
    categories = session.scalars(select(Category.slug).order_by(Category.slug))
    # Every documents row was written with its first citation (one transaction), so the
    # small documents table names them without reading every citation.
    documents = session.scalars(select(LegalDocument.key).order_by(LegalDocument.key))
    return [
        ALL,
        *(Listing(ListingKind.AGENCY, slug) for slug in agencies),
        *(Listing(ListingKind.CATEGORY, slug) for slug in categories),
        *(document(key) for key in documents),
    ]


def listing_heading(session: Session, listing: Listing, site_title: str) -> str:
    """The human name of a listing: the site, the agency's name, the category as written, or
    the document's title (its name and date)."""
    if listing.kind is ListingKind.AGENCY:
        name = session.scalar(select(Agency.name).where(Agency.slug == listing.key))
        return name or listing.key
    if listing.kind is ListingKind.CATEGORY:
        category = session.scalar(select(Category.name).where(Category.slug == listing.key))
        return category or listing.key
    if listing.kind is ListingKind.DOCUMENT:
        found = session.get(LegalDocument, listing.key)
        return found.title if found is not None else listing.key
    return site_title


def most_cited(
    session: Session, limit: int = DOCUMENTS_INDEX_ITEMS
) -> list[tuple[LegalDocument, int]]:
    """The documents cited by the most published bulletins (counting each bulletin's live
    revision once), most first, then by key. Aggregates every citation of the site: built
    as seldom as a sitemap (shared.refresh.rebuild_interval)."""
    cited = func.count(Citation.bulletin_id).label("cited")
    query = (
        select(LegalDocument, cited)
        .join(Citation, Citation.document_key == LegalDocument.key)
        .join(Bulletin, _live_citation())
        .where(Bulletin.status == BulletinStatus.PUBLISHED)
        .group_by(LegalDocument.key)
        .order_by(cited.desc(), LegalDocument.key)
        .limit(limit)
    )
    return [(row[0], int(row[1])) for row in session.execute(query)]


def documents_fingerprint(rows: Iterable[tuple[LegalDocument, int]]) -> str:
    """What the /van-ban/ index shows: which documents, in which order, with which counts
    and titles."""
    digest = hashlib.blake2b(digest_size=12)
    for found, count in rows:
        digest.update(f"{found.key}:{count}:{found.title};".encode())
    return digest.hexdigest()


def documents_cited_by(session: Session, bulletin_id: int) -> set[str]:
    """Every document any revision of the bulletin cited (the citations' primary key
    starts with the bulletin id: an index range)."""
    query = select(Citation.document_key).where(Citation.bulletin_id == bulletin_id).distinct()
    return set(session.scalars(query))


# -- archives (RFC 5005): a listing's bulletins by UTC month ---------------------------------


def month_bounds(key: str) -> tuple[datetime, datetime]:
    """[start, end) of a month key ``YYYY-MM``, in UTC."""
    start = datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _key_of(moment: datetime) -> str:
    return _utc(moment).astimezone(UTC).strftime("%Y-%m")


def parts_of(count: int, per_part: int) -> int:
    """How many archive documents a month of `count` entries takes (0 when empty)."""
    return -(-count // per_part)


@dataclass(frozen=True)
class ArchiveMonth:
    """One non-empty month of a listing's archive, in a few numbers (aggregates over the
    listing index's range): its build and the check both take it from `month_summary`, and
    a difference between what a build recorded and what the check finds means stale."""

    key: str
    count: int
    id_sum: int
    revision_sum: int  # any correction bumps a revision, so it moves this
    lastmod: datetime

    @property
    def summary(self) -> str:
        stamp = _utc(self.lastmod).astimezone(UTC).isoformat(timespec="microseconds")
        return f"{self.count}:{self.id_sum}:{self.revision_sum}:{stamp}"


def month_versions(session: Session, listing: Listing, key: str) -> list[tuple[int, int]]:
    """(id, revision) of the listing's bulletins published in month `key`, oldest first by
    (published_at, id): the order archive parts are cut in, so earlier parts fill up and then
    stay fixed. Plain tuples through Core: a big month has thousands, and ORM rows cost
    several times more to make."""
    query = _in_month(listing, _published(listing, Bulletin.id, Bulletin.revision), key)
    query = query.order_by(_time(listing), _id(listing))
    return [(row[0], row[1]) for row in session.connection().execute(query)]


def _in_month(listing: Listing, query: Select[Any], key: str) -> Select[Any]:
    start, end = month_bounds(key)
    return query.where(_time(listing) >= start, _time(listing) < end)


def _edge(
    session: Session,
    listing: Listing,
    *,
    newest: bool,
    since: datetime | None = None,
    before: datetime | None = None,
) -> datetime | None:
    """The oldest (`newest`: the newest) time of the listing's published rows in [since,
    before): an index lookup."""
    time = _time(listing)
    if listing.kind is ListingKind.DOCUMENT:
        # Over a join min()/max() lose their index shortcut and would aggregate the whole
        # range: the first row in the index's order instead, which stops at once.
        query = _published(listing, time)
    else:
        query = _published(listing, func.max(time) if newest else func.min(time))
    if since is not None:
        query = query.where(time >= since)
    if before is not None:
        query = query.where(time < before)
    if listing.kind is ListingKind.DOCUMENT:
        order = (time.desc(), _id(listing).desc()) if newest else (time, _id(listing))
        query = query.order_by(*order).limit(1)
    return session.scalar(query)


def month_summary(session: Session, listing: Listing, key: str) -> ArchiveMonth:
    """The month's aggregates: reads every row of the month (revision and updated_at are not
    in the listing index), so the check computes it for a bounded window of months only."""
    count, id_sum, revision_sum, lastmod = session.execute(
        _in_month(
            listing,
            _published(
                listing,
                func.count(Bulletin.id),
                func.sum(Bulletin.id),
                func.sum(Bulletin.revision),
                func.max(Bulletin.updated_at),
            ),
            key,
        )
    ).one()
    return ArchiveMonth(
        key,
        int(count),
        int(id_sum or 0),
        int(revision_sum or 0),
        _utc(lastmod or month_bounds(key)[0]),
    )


def summary_of(
    session: Session, listing: Listing, key: str, versions: Sequence[tuple[int, int]]
) -> ArchiveMonth:
    """`month_summary` of a month whose (id, revision) list a build has just read: the
    sums come from that list, only the newest updated_at from the database."""
    lastmod = session.scalar(
        _in_month(listing, _published(listing, func.max(Bulletin.updated_at)), key)
    )
    return ArchiveMonth(
        key,
        len(versions),
        sum(i for i, _ in versions),
        sum(r for _, r in versions),
        _utc(lastmod or month_bounds(key)[0]),
    )


def month_count(session: Session, listing: Listing, key: str) -> int:
    """How many published bulletins the month has: an index-only count."""
    query = _in_month(listing, _published(listing, func.count(Bulletin.id)), key)
    return int(session.scalar(query) or 0)


def month_keys(session: Session, listing: Listing) -> list[str]:
    """Every non-empty month of the listing, oldest first: one index lookup per month (the
    first row at or past its start), no row read."""
    keys: list[str] = []
    first = _edge(session, listing, newest=False)
    while first is not None:
        keys.append(_key_of(first))
        first = _edge(session, listing, newest=False, since=month_bounds(keys[-1])[1])
    return keys


def archive_months(session: Session, listing: Listing) -> list[ArchiveMonth]:
    """Every non-empty month of the listing with its summary, oldest first (reads every
    published row of the listing: for tests and tools, not for periodic checks)."""
    return [month_summary(session, listing, key) for key in month_keys(session, listing)]


@dataclass(frozen=True)
class Neighbours:
    """The non-empty months around one month: the older one with its part count (its last
    part is the older neighbour of this month's first), and the newer one's key."""

    prev: tuple[str, int] | None
    next: str | None


def neighbours(session: Session, listing: Listing, key: str, per_part: int) -> Neighbours:
    """Three index-only lookups: the newest row before the month, its month's count, the
    oldest row after it."""
    start, end = month_bounds(key)
    before = _edge(session, listing, newest=True, before=start)
    after = _edge(session, listing, newest=False, since=end)
    prev = None
    if before is not None:
        older = _key_of(before)
        prev = (older, parts_of(month_count(session, listing, older), per_part))
    return Neighbours(prev, None if after is None else _key_of(after))


def month_fingerprint(month: ArchiveMonth, around: Neighbours, per_part: int) -> str:
    """What a month's archive documents show: its rows (in summary), how they are cut into
    parts (a new `archive_items` makes every month stale) and its neighbour links."""
    prev = "" if around.prev is None else f"{around.prev[0]}#{around.prev[1]}"
    cut = f"{parts_of(month.count, per_part)}x{per_part}"
    return f"{month.summary}|{cut}|{prev}|{around.next or ''}"


def month_fingerprints(months: Sequence[ArchiveMonth], per_part: int) -> dict[str, str]:
    """Each month's fingerprint, given every non-empty month of a listing oldest first (the
    neighbours of each are the months beside it)."""
    found = {}
    for i, month in enumerate(months):
        older = months[i - 1] if i > 0 else None
        newer = months[i + 1] if i + 1 < len(months) else None
        around = Neighbours(
            None if older is None else (older.key, parts_of(older.count, per_part)),
            None if newer is None else newer.key,
        )
        found[month.key] = month_fingerprint(month, around, per_part)
    return found


def newest_month(session: Session, listing: Listing, per_part: int) -> tuple[str, int] | None:
    """The listing's newest non-empty month and its part count: where its subscription
    feeds' ``prev-archive`` link points (the last part). Two index lookups."""
    newest = _edge(session, listing, newest=True)
    if newest is None:
        return None
    key = _key_of(newest)
    return key, parts_of(month_count(session, listing, key), per_part)
