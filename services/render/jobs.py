"""What the render worker does, as plain functions the Celery tasks wrap (and tests call)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    bindparam,
    case,
    delete,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.render import sitemaps
from services.render.pages import PageRenderer
from shared import citations, faults, worker_metrics
from shared.db import session_factory, session_scope
from shared.listings import (
    DOCUMENTS_INDEX_ITEMS,
    documents_fingerprint,
    fingerprint,
    listing_heading,
    most_cited,
    newest_bulletins,
    versions_of,
)
from shared.logs import bulletin_fields
from shared.models import (
    Agency,
    Bulletin,
    BulletinStatus,
    Category,
    Citation,
    LegalDocument,
    utcnow,
)
from shared.refresh import Job
from shared.runtime import Runtime
from shared.site import (
    ARCHIVE_CHECK,
    DOCUMENTS,
    FEED_FORMATS,
    FEEDS_PAGE_PATH,
    ROBOTS_PATH,
    SITEMAP_INDEX,
    SITEMAP_NEWS,
    Listing,
    ListingKind,
    archive,
    article_path,
    document,
    file_for,
    listings_of,
    month_key,
    opml_path,
    sitemap,
    sitemap_path,
    tombstone_for,
)

log = logging.getLogger(__name__)

# Statuses whose current revision a render task may act on.
_RENDERABLE = (BulletinStatus.QUEUED, BulletinStatus.PUBLISHED, BulletinStatus.WITHDRAWN)


def _current(bulletin_id: Any, revision: Any) -> Any:
    """The WHERE clause of "this revision is current and still owes a render"."""
    return (
        (Bulletin.id == bulletin_id)
        & (Bulletin.revision == revision)
        & (Bulletin.rendered_revision < revision)
        & Bulletin.status.in_(_RENDERABLE)
    )


# The two statements every render runs, built once with bound parameters: building them per
# call (the WHERE clause's coercions, the cache key of fresh literals) cost ~0.3 ms a render.
_ID: Any = bindparam("b_id")
_REVISION: Any = bindparam("b_revision")
_CLAIM = (
    update(Bulletin)
    .where(_current(_ID, _REVISION), Bulletin.attempts < bindparam("b_max_attempts"))
    .values(attempts=Bulletin.attempts + 1)
    .returning(Bulletin)
)
_DONE = (
    update(Bulletin)
    .where(_current(_ID, _REVISION))
    .values(
        status=bindparam("b_status"),
        rendered_revision=_REVISION,
        # Its citation rows (written in this transaction) become the live ones.
        cited_revision=_REVISION,
        rendered_at=bindparam("b_now"),
        pending_since=None,
        last_error=None,
    )
)


def _claim_attempt(runtime: Runtime, bulletin_id: int, revision: int) -> Bulletin | None:
    """Count one attempt at this revision and load the bulletin; None when there is nothing
    (more) to do.

    Counted in the database, not in Redis, and committed before rendering, so a poison
    bulletin that kills its worker (and is redelivered for ever by
    `task_reject_on_worker_lost`) still runs out of attempts, and is then marked failed here.
    One UPDATE … RETURNING both counts and loads (a separate SELECT cost ~0.8 ms a render).
    """
    settings = runtime.settings
    with session_scope(settings) as session:
        claimed = session.scalars(
            _CLAIM,
            {"b_id": bulletin_id, "b_revision": revision,
             "b_max_attempts": settings.max_attempts},
        ).one_or_none()  # fmt: skip
        if claimed is not None:
            claimed.agency  # noqa: B018 - load it now: the page needs it after the session
            return claimed
        # Still owed but no attempts left, or simply nothing to do (stale, already done)?
        exhausted = session.execute(
            select(Bulletin.last_error).where(_current(bulletin_id, revision))
        ).one_or_none()
    if exhausted is not None:
        last_error = exhausted.last_error or "the worker died while rendering"
        reason = f"gave up after {settings.max_attempts} attempts; last error: {last_error}"
        give_up(runtime, bulletin_id, revision, reason)
    return None


def _agency_of(session: Any, bulletin_id: int) -> str | None:
    """The bulletin's agency slug, for the log line of a rare event (a failure)."""
    return session.scalar(  # type: ignore[no-any-return]
        select(Agency.slug).join(Bulletin, Bulletin.agency_id == Agency.id)
        .where(Bulletin.id == bulletin_id)
    )  # fmt: skip


def give_up(runtime: Runtime, bulletin_id: int, revision: int, reason: str) -> None:
    """Stop retrying a revision. A withdrawal stays `withdrawn` (it must never look public
    again, nor be put back in listings by `retry-failed`); the reconciler's page check
    retries it while its page is still online."""
    with session_scope(runtime.settings) as session:
        agency = _agency_of(session, bulletin_id)
        gave_up: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin)
            .where(_current(bulletin_id, revision))
            .values(
                status=case(
                    (Bulletin.status == BulletinStatus.WITHDRAWN, BulletinStatus.WITHDRAWN),
                    else_=BulletinStatus.FAILED,
                ),
                pending_since=None,
                last_error=reason,
            )
        )
    if gave_up.rowcount:
        worker_metrics.FAILED.inc()
    log.error(
        "render gave up on bulletin %s revision %s: %s", bulletin_id, revision, reason,
        extra=bulletin_fields(bulletin_id, agency, revision),
    )  # fmt: skip


def record_error(runtime: Runtime, bulletin_id: int, revision: int, error: BaseException) -> None:
    """Keep the last error visible in the status API while retries go on."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    with session_scope(runtime.settings) as session:
        agency = _agency_of(session, bulletin_id)
        session.execute(
            update(Bulletin)
            .where(Bulletin.id == bulletin_id, Bulletin.revision == revision)
            .values(last_error=reason)
        )
    log.warning(
        "render of bulletin %s revision %s failed (retrying): %s", bulletin_id, revision, reason,
        extra=bulletin_fields(bulletin_id, agency, revision),
    )  # fmt: skip


def publish_bulletin(
    runtime: Runtime, renderer: PageRenderer, bulletin_id: int, revision: int
) -> bool:
    """Make one revision of a bulletin live (or, once withdrawn, take it down).

    Idempotent and stale-safe: returns False without writing when the bulletin is gone, the
    revision is no longer current, or it was already done. The page is written while the
    guarded UPDATE holds the row's write lock, so two renders of one bulletin never
    interleave and an older revision can never overwrite a newer one. The revision's
    citation rows commit in that same transaction, so a document's listing gains or loses
    the bulletin exactly when its page goes live.
    """
    settings = runtime.settings
    bulletin = _claim_attempt(runtime, bulletin_id, revision)
    if bulletin is None:
        return False
    fields = bulletin_fields(bulletin_id, bulletin.agency.slug, revision)
    log.debug("render started", extra=fields)
    url_path = article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    withdrawn = bulletin.status == BulletinStatus.WITHDRAWN
    documents: list[citations.Document] = []
    if withdrawn:
        html = renderer.withdrawn(bulletin)
    else:
        documents = citations.extract_bulletin(bulletin.title, bulletin.summary, bulletin.body_html)
        html = renderer.article(bulletin, documents)
    listings = listings_of(bulletin.agency.slug, bulletin.category_slug)

    faults.checkpoint(settings, faults.RENDER_BEFORE_WRITE)
    with session_scope(settings) as session:
        claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            _DONE,
            {"b_id": bulletin_id, "b_revision": revision, "b_now": utcnow(),
             "b_status": BulletinStatus.WITHDRAWN if withdrawn else BulletinStatus.PUBLISHED},
        )  # fmt: skip
        if not claimed.rowcount:
            return False
        cited = _write_citations(session, bulletin, revision, documents)
        if withdrawn:
            runtime.storage.put(tombstone_for(url_path), html.encode())
            runtime.storage.delete(file_for(url_path))
        else:
            runtime.storage.put(file_for(url_path), html.encode())
    if withdrawn:
        worker_metrics.WITHDRAWN.inc()
    else:
        worker_metrics.observe_publish(bulletin.updated_at, bulletin.published_at)

    # Its listings' pages and feeds, and the sitemaps: its month's (a withdrawal drops its URL
    # there) and the news one. The home page's build asks for the sitemap index (see
    # render_listing), so `bantin rebuild` and the reconciler's checks reach it too. Then
    # the pages and feeds of every document this or an earlier revision cites (a correction
    # that dropped a citation, a withdrawal: the bulletin leaves those), and /van-ban/.
    corrected = bulletin.revision > 1
    documents_of = [document(key) for key in cited]
    runtime.refresher.request_many(
        [(job, listing) for listing in listings for job in Job]
        + [(Job.PAGE, target) for target in sitemaps_of(bulletin.published_at)]
        + archives_of(listings, bulletin.published_at, corrected=corrected)
        + [(job, listing) for listing in documents_of for job in Job]
        + archives_of(documents_of, bulletin.published_at, corrected=corrected)
        + ([(Job.PAGE, DOCUMENTS)] if documents_of else [])
    )
    # One line per publish, naming the listings asked to refresh: their builds log the
    # listing too, so a bulletin can be followed to the feeds that show it.
    log.info(
        "withdrawn page written" if withdrawn else "published",
        extra=fields
        | {"listing": ",".join(listing.target for listing in [*listings, *documents_of])},
    )
    return True


def _write_citations(
    session: Session, bulletin: Bulletin, revision: int, documents: Sequence[citations.Document]
) -> list[str]:
    """Store the citations of the revision just claimed (inside the claiming transaction);
    returns the keys of every document whose listing may have changed, sorted: the ones it
    cites and every one an earlier revision cited.

    The hot path costs one SELECT (the bulletin's earlier citations, an index range of the
    primary key) and the inserts. A first render of a first revision that cites nothing
    costs nothing: no revision of it has rows yet (a repair re-rendering it reads them: an
    upgraded extraction may no longer find what an older one stored)."""
    keys = sorted({found.key for found in documents})
    earlier: set[str] = set()
    if revision > 1 or documents or bulletin.cited_revision is not None:
        rows = session.execute(
            select(Citation.revision, Citation.document_key).where(
                Citation.bulletin_id == bulletin.id
            )
        ).all()
        earlier = {key for _, key in rows}
        # Rows of this very revision (a repair re-rendering it) that its text no longer
        # gives: an extraction changed by an upgrade. Rare; `bantin rebuild` does the same.
        gone = {key for number, key in rows if number == revision} - set(keys)
        if gone:
            delete_citations(session, [(bulletin.id, revision)])
    if documents:
        insert_documents(session, documents)
        insert_citations(
            session, citation_rows(bulletin.id, revision, bulletin.published_at, documents)
        )
    return sorted(earlier | set(keys))


_DOCUMENTS: Any = LegalDocument.__table__
_CITATIONS: Any = Citation.__table__


def delete_citations(executor: Session | Connection, versions: Sequence[tuple[int, int]]) -> None:
    """Remove the citation rows of these (bulletin id, revision)s, before writing them anew."""
    if versions:
        executor.execute(
            delete(_CITATIONS).where(
                tuple_(_CITATIONS.c.bulletin_id, _CITATIONS.c.revision).in_(list(versions))
            )
        )


def citation_rows(
    bulletin_id: int,
    revision: int,
    published_at: datetime,
    documents: Sequence[citations.Document],
) -> list[dict[str, Any]]:
    """The citation rows of one revision (`position`: the order of first mention)."""
    position = {found.key: number for number, found in reversed(list(enumerate(documents)))}
    return [
        {"bulletin_id": bulletin_id, "revision": revision, "document_key": key,
         "position": number, "published_at": published_at}
        for key, number in sorted(position.items())
    ]  # fmt: skip


def insert_citations(executor: Session | Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert citation rows (`citation_rows`), their documents' rows already written."""
    if rows:
        statement = _insert(executor)(_CITATIONS).on_conflict_do_nothing(
            index_elements=["bulletin_id", "revision", "document_key"]
        )
        executor.execute(statement, list(rows))


def insert_documents(
    executor: Session | Connection, documents: Iterable[citations.Document]
) -> None:
    """Insert the documents rows not there yet (ON CONFLICT DO NOTHING: written once, by
    whichever transaction cites a document first), in key order: two transactions inserting
    the same new documents take their unique-index locks in one order, so neither can wait
    for the other in a cycle (PostgreSQL would abort one as a deadlock)."""
    unique = sorted({found.key: found for found in documents}.values(), key=lambda d: d.key)
    if not unique:
        return
    executor.execute(
        _insert(executor)(_DOCUMENTS).on_conflict_do_nothing(index_elements=["key"]),
        [
            {"key": found.key, "doc_type": found.doc_type[:60], "number": found.number[:40],
             "year": found.year, "issuer": found.issuer[:60], "name": found.name[:200],
             "issued_on": found.issued_on, "created_at": utcnow()}
            for found in unique
        ],
    )  # fmt: skip


def _insert(executor: Session | Connection) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING (SQLite and PostgreSQL)."""
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert


def render_listing(runtime: Runtime, renderer: PageRenderer, listing: Listing) -> str:
    """Rewrite a listing's index page from the database; returns the rows' fingerprint."""
    settings = runtime.settings
    with session_factory(settings)() as session:
        bulletins = newest_bulletins(session, listing, settings.index_items)
        heading = listing_heading(session, listing, settings.site_title)
        html = renderer.listing(listing, heading, bulletins)
    runtime.storage.put(file_for(listing.page_path), html.encode())
    worker_metrics.log_build(log, "index page built", listing, bulletins)
    if listing.kind is ListingKind.DOCUMENT:
        # A document's page changed (a publish, or a repair of a lost trigger): /van-ban/'s
        # counts may have too. Coalesced, and built at most as often as a sitemap.
        runtime.refresher.request(Job.PAGE, DOCUMENTS)
    if listing.kind is ListingKind.ALL:
        # Every publish, correction and withdrawal rebuilds the home page, and so does
        # `bantin rebuild` and a stale-listing repair: the sitemap index (with robots.txt and
        # the feed directory, and through it any stale month) follows them all.
        runtime.refresher.request(Job.PAGE, sitemap(SITEMAP_INDEX))
    return fingerprint(versions_of(bulletins))


def build_documents_index(runtime: Runtime, renderer: PageRenderer, listing: Listing) -> str:
    """Rewrite /van-ban/, the most cited documents (``ListingKind.DOCUMENTS``); returns the
    fingerprint of its rows (the reconciler compares it with the database's)."""
    if listing.kind is not ListingKind.DOCUMENTS:
        raise ValueError(f"not the documents index: {listing.target}")
    with session_factory(runtime.settings)() as session:
        rows = most_cited(session, DOCUMENTS_INDEX_ITEMS)
        html = renderer.documents_index(rows)
        shown = documents_fingerprint(rows)
    runtime.storage.put(file_for(DOCUMENTS.page_path), html.encode())
    log.info("documents index built: %d documents", len(rows),
             extra={"listing": listing.target})  # fmt: skip
    return shown


def archives_of(
    listings: list[Listing], published_at: datetime, *, corrected: bool
) -> list[tuple[Job, Listing]]:
    """The RFC 5005 archive builds (feed worker) a change to a bulletin calls for: its month
    in each of its listings; after a correction also each listing's check, which finds a
    month the bulletin left (a new published_at) by its stale fingerprint: at once when it
    is among the newest months, else within a round of the check's rotating window (a
    check reads a bounded number of months, services/feed/archives.py)."""
    month = month_key(published_at)
    wanted = [(Job.FEED, archive(listing, month)) for listing in listings]
    if corrected:
        wanted += [(Job.FEED, archive(listing, ARCHIVE_CHECK)) for listing in listings]
    return wanted


# -- sitemaps and the feed directory ---------------------------------------------------------


def sitemaps_of(published_at: datetime) -> list[Listing]:
    """The sitemap builds a change to a bulletin published at `published_at` calls for (the
    index comes with the home page's build)."""
    return [sitemap(month_key(published_at)), sitemap(SITEMAP_NEWS)]


def build_sitemap(
    runtime: Runtime, renderer: PageRenderer, listing: Listing, now: datetime | None = None
) -> str:
    """Rewrite one sitemap file (``ListingKind.SITEMAP``); returns its fingerprint."""
    if listing.kind is not ListingKind.SITEMAP:
        raise ValueError(f"not a sitemap: {listing.target}")
    if listing.key == SITEMAP_INDEX:
        return _build_index(runtime, renderer)
    if listing.key == SITEMAP_NEWS:
        return _build_news(runtime, now or utcnow())
    return _build_month(runtime, listing.key)


def _build_month(runtime: Runtime, key: str) -> str:
    settings = runtime.settings
    with session_factory(settings)() as session:
        urls, summary = sitemaps.month_rows(session, settings.public_url, key)
    storage = runtime.storage
    size = sitemaps.MAX_URLS
    for part in range(1, summary.parts + 1):
        chunk = urls[(part - 1) * size : part * size]
        storage.put(file_for(sitemap_path(key, part)), sitemaps.urlset(chunk))
    # Parts left over from when the month was bigger (all of them when it is now empty: the
    # index no longer lists it either).
    part = summary.parts + 1
    while storage.exists(file_for(sitemap_path(key, part))):
        storage.delete(file_for(sitemap_path(key, part)))
        part += 1
    log.info("sitemap built: %s, %d urls", key, len(urls), extra={"listing": f"sitemap:{key}"})
    return summary.fingerprint


def _build_news(runtime: Runtime, now: datetime) -> str:
    settings = runtime.settings
    with session_factory(settings)() as session:
        rows = sitemaps.news_rows(session, settings.public_url, now)
    body = sitemaps.news_sitemap([url for _, _, url in rows], settings.site_title)
    path = file_for(sitemap_path(SITEMAP_NEWS))
    existed = runtime.storage.exists(path)
    if body is None:  # no article in two days: no valid news sitemap, so no file
        runtime.storage.delete(path)
    else:
        runtime.storage.put(path, body)
    if existed != (body is not None):
        # robots.txt names the news sitemap only while it exists: the index build writes it.
        runtime.refresher.request(Job.PAGE, sitemap(SITEMAP_INDEX))
    return fingerprint((bulletin_id, revision) for bulletin_id, revision, _ in rows)


def _build_index(runtime: Runtime, renderer: PageRenderer) -> str:
    """The sitemap index, robots.txt and the feed directory; and a rebuild of every month
    sitemap (and the news one) whose last build no longer matches the database.

    That check catches what the publish path cannot: a correction that moved a bulletin to
    another month, a killed month build, counters lost with Redis, `bantin rebuild`."""
    settings = runtime.settings
    with session_factory(settings)() as session:
        months = sitemaps.month_summaries(session)
        directory = feed_directory(session)
    storage = runtime.storage
    index = sitemaps.sitemap_index(
        sitemaps.Url(renderer.absolute(sitemap_path(m.key, part)), m.lastmod)
        for m in months
        for part in range(1, m.parts + 1)
    )
    if months:
        storage.put(file_for(sitemap_path(SITEMAP_INDEX)), index)
    else:  # an index must list at least one sitemap: none until something is published
        storage.delete(file_for(sitemap_path(SITEMAP_INDEX)))
    robots = sitemaps.robots_txt(
        settings.public_url,
        with_sitemaps=bool(months),
        with_news=storage.exists(file_for(sitemap_path(SITEMAP_NEWS))),
    )
    storage.put(file_for(ROBOTS_PATH), robots)
    html = renderer.feed_directory(directory)
    storage.put(file_for(FEEDS_PAGE_PATH), html.encode())
    for fmt in FEED_FORMATS:
        storage.put(file_for(opml_path(fmt)), _opml(renderer, directory, fmt))

    stale = [sitemap(m.key) for m in months if _stale(runtime, m.key, m.fingerprint)]
    if _stale(runtime, SITEMAP_NEWS, None):
        stale.append(sitemap(SITEMAP_NEWS))
    if stale:
        runtime.refresher.request_many([(Job.PAGE, target) for target in stale])
    log.info("sitemap index built: %d months, %d stale", len(months), len(stale),
             extra={"listing": f"sitemap:{SITEMAP_INDEX}"})  # fmt: skip
    digest = hashlib.blake2b(digest_size=12)
    for month in months:
        digest.update(f"{month.key}={month.fingerprint};".encode())
    for listing, name in directory:
        digest.update(f"{listing.target}={name};".encode())
    return digest.hexdigest()


def _stale(runtime: Runtime, key: str, fingerprint: str | None) -> bool:
    """Does this sitemap need a build: never built (or Redis lost it), built from other rows
    than `fingerprint` says the database has now (None: any build will do), or its file is
    missing (a site directory restored without it, `bantin rebuild` onto an empty volume)?
    An empty month has no file, but then it is not in the index either."""
    built = runtime.refresher.built(Job.PAGE, sitemap(key))
    if built is None or (fingerprint is not None and built != fingerprint):
        return True
    if key == SITEMAP_NEWS and built == _NO_NEWS:
        return False  # built with no article in two days: no file is what it wrote
    return not runtime.storage.exists(file_for(sitemap_path(key)))


# The fingerprint of a news build that found nothing (and so wrote no file).
_NO_NEWS = fingerprint(())


def feed_directory(session: Session) -> list[tuple[Listing, str]]:
    """Every listing with a feed, with its name: all, the agencies, the categories (each by
    name, then slug, so the order never depends on the database's)."""
    agencies = sorted(session.execute(select(Agency.slug, Agency.name)),
                      key=lambda row: (row[1].casefold(), row[0]))  # fmt: skip
    categories = sorted(session.execute(select(Category.slug, Category.name)),
                        key=lambda row: (row[1].casefold(), row[0]))  # fmt: skip
    return [
        (Listing(ListingKind.ALL), ""),
        *((Listing(ListingKind.AGENCY, slug), name) for slug, name in agencies),
        *((Listing(ListingKind.CATEGORY, slug), name) for slug, name in categories),
    ]


_OPML_VERSIONS = {"rss": "RSS2", "atom": "ATOM", "json": "JSONFEED"}
_OPML_FORMATS = {"rss": "RSS", "atom": "Atom", "json": "JSON Feed"}


def _opml(renderer: PageRenderer, directory: list[tuple[Listing, str]], fmt: str) -> bytes:
    site = renderer.settings.site_title

    def outlines(kind: ListingKind) -> list[sitemaps.FeedOutline]:
        return [
            sitemaps.FeedOutline(
                text=renderer.feed_link(listing, name).title,
                html_url=renderer.absolute(listing.page_path),
                xml_url=renderer.absolute(listing.feed_path(fmt)),
            )
            for listing, name in directory
            if listing.kind is kind
        ]

    groups = [
        sitemaps.FeedGroup(None, outlines(ListingKind.ALL)),
        sitemaps.FeedGroup("Cơ quan ban hành", outlines(ListingKind.AGENCY)),
        sitemaps.FeedGroup("Chuyên mục", outlines(ListingKind.CATEGORY)),
    ]
    return sitemaps.opml(f"{site} – nguồn tin {_OPML_FORMATS[fmt]}", groups, _OPML_VERSIONS[fmt])
