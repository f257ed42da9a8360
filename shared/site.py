"""The public URL layout: the one contract between the render and feed workers and the gateway.

Every page and feed is a file under the site directory whose relative path is its URL path
(``/`` and paths ending in ``/`` map to ``index.html``).

    /                               home page, newest bulletins of every agency
    /{agency}/                      an agency's page
    /{agency}/{slug}-{id}.html      an article page
    /chuyen-muc/{category}/         a category page
    /van-ban/                       the most cited legal documents
    /van-ban/{document}/            the bulletins citing one legal document (shared.citations),
                                    newest first, every agency's
    /feeds/all.rss, /feeds/all.atom, /feeds/all.json
    /feeds/agency/{agency}.rss|.atom|.json
    /feeds/category/{category}.rss|.atom|.json    (.json: JSON Feed 1.1)
    /feeds/document/{document}.rss|.atom|.json
    /feeds/all/{YYYY-MM}.rss|.atom, /feeds/agency/{agency}/{YYYY-MM}.rss|.atom,
    /feeds/category/{category}/{YYYY-MM}.rss|.atom,
    /feeds/document/{document}/{YYYY-MM}.rss|.atom
                                    RFC 5005 archives: the listing's bulletins published that
                                    month (UTC); past `archive_items` entries the rest in
                                    {YYYY-MM}-2.rss|.atom, ... (``archive_path``); the RSS
                                    and Atom feeds link the newest as prev-archive
    /static/...                     CSS and JS
    /sitemap.xml                    sitemap index over the month sitemaps
    /sitemaps/{YYYY-MM}.xml         the article URLs published that month (UTC); past
                                    50,000 URLs the rest in /sitemaps/{YYYY-MM}-2.xml, ...
    /sitemaps/news.xml              Google News sitemap: the last two days
    /robots.txt                     names the sitemaps
    /feeds.opml, /feeds/atom.opml, /feeds/json.opml, /feeds/
                                    every feed, for feed readers (OPML) and for people

A withdrawn article leaves a tombstone at ``.gone/<its file>``; the gateway answers 410 Gone
with it. Dot-directories are never served directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePosixPath

CATEGORY_PREFIX = "chuyen-muc"
DOCUMENT_PREFIX = "van-ban"
TOMBSTONE_DIR = ".gone"
# The 404 page, where nginx finds it in the store (deploy/nginx.conf); dot-named, so no URL
# reaches it directly.
NOT_FOUND_PATH = ".errors/404.html"
# Top-level path segments an agency slug may not take, or its pages would shadow these.
RESERVED_SLUGS = frozenset(
    {
        CATEGORY_PREFIX,
        DOCUMENT_PREFIX,
        "feeds",
        "static",
        "healthz",
        "metrics",
        "v1",
        "docs",
        "redoc",
        "openapi.json",
        "index.html",
        "sitemap.xml",
        "sitemaps",
        "robots.txt",
        "feeds.opml",
    }
)

SITEMAP_INDEX_PATH = "/sitemap.xml"
ROBOTS_PATH = "/robots.txt"
OPML_PATH = "/feeds.opml"
FEEDS_PAGE_PATH = "/feeds/"
# The keys of a sitemap "listing" besides its months (YYYY-MM).
SITEMAP_INDEX = "index"
SITEMAP_NEWS = "news"
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
# A legal document's citation key (shared.citations): "qd-ttg-628-2020".
DOCUMENT_KEY = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,118}[a-z0-9])?")


# Every listing's feed formats, each the suffix of its file: RSS 2.0, Atom 1.0, JSON Feed 1.1.
FEED_FORMATS = ("rss", "atom", "json")
# The formats with RFC 5005 archives (JSON Feed has no archive convention).
ARCHIVE_FORMATS = ("rss", "atom")
# The key of a listing's archive check (which finds its stale months) besides its months.
ARCHIVE_CHECK = "check"


class ListingKind(StrEnum):
    ALL = "all"
    AGENCY = "agency"
    CATEGORY = "category"
    # The bulletins whose live revision cites one legal document; key: its citation key
    # (shared.citations, "qd-ttg-628-2020").
    DOCUMENT = "document"
    # Not a scope: the /van-ban/ page of the most cited documents, built like an index page
    # (Job.PAGE), key empty.
    DOCUMENTS = "documents"
    # Not a scope of bulletins but one sitemap file, built like an index page (Job.PAGE):
    # key "index" (which also writes robots.txt and the feed directory), "news" or a month.
    SITEMAP = "sitemap"
    # Not a scope either but one month of a listing's RFC 5005 archive, built like a feed
    # (Job.FEED): key "{listing target}@{YYYY-MM}", or "{listing target}@check" for the
    # listing's check of every month against the database.
    ARCHIVE = "archive"


@dataclass(frozen=True)
class Listing:
    """A scope of bulletins shown as an index page and as feeds (one per ``FEED_FORMATS``)."""

    kind: ListingKind
    key: str = ""  # agency or category slug; empty for ALL

    @property
    def target(self) -> str:
        """A stable string naming this listing (used as a Redis key part and a task argument)."""
        if self.kind in _KEYLESS:
            return self.kind.value
        return f"{self.kind.value}:{self.key}"

    @classmethod
    def from_target(cls, target: str) -> Listing:
        kind, _, key = target.partition(":")
        listing = cls(ListingKind(kind), key)
        if (listing.kind in _KEYLESS) != (key == ""):
            raise ValueError(f"bad listing target {target!r}")
        if listing.kind is ListingKind.DOCUMENT and not DOCUMENT_KEY.fullmatch(key):
            raise ValueError(f"bad document target {target!r}")
        if listing.kind is ListingKind.SITEMAP and not (
            key in (SITEMAP_INDEX, SITEMAP_NEWS) or _MONTH.fullmatch(key)
        ):
            raise ValueError(f"bad sitemap target {target!r}")
        if listing.kind is ListingKind.ARCHIVE:
            scope, _, month = key.rpartition("@")
            if Listing.from_target(scope).kind not in _SCOPES or not (
                month == ARCHIVE_CHECK or _MONTH.fullmatch(month)
            ):
                raise ValueError(f"bad archive target {target!r}")
        return listing

    @property
    def archive_scope(self) -> tuple[Listing, str]:
        """An ARCHIVE build's listing and month key (or ``ARCHIVE_CHECK``)."""
        if self.kind is not ListingKind.ARCHIVE:
            raise ValueError(f"not an archive: {self.target}")
        scope, _, month = self.key.rpartition("@")
        return Listing.from_target(scope), month

    @property
    def page_path(self) -> str:
        """The URL path of the file this listing's page build writes."""
        if self.kind is ListingKind.ALL:
            return "/"
        if self.kind is ListingKind.SITEMAP:
            return sitemap_path(self.key)
        if self.kind is ListingKind.ARCHIVE:
            raise ValueError(f"an archive has no page: {self.target}")
        if self.kind is ListingKind.AGENCY:
            return f"/{self.key}/"
        if self.kind is ListingKind.DOCUMENT:
            return f"/{DOCUMENT_PREFIX}/{self.key}/"
        if self.kind is ListingKind.DOCUMENTS:
            return DOCUMENTS_PATH
        return f"/{CATEGORY_PREFIX}/{self.key}/"

    def feed_path(self, fmt: str) -> str:
        """`fmt` is one of ``FEED_FORMATS``."""
        if fmt not in FEED_FORMATS or self.kind not in _SCOPES:
            raise ValueError(fmt)
        if self.kind is ListingKind.ALL:
            return f"/feeds/all.{fmt}"
        return f"/feeds/{self.kind.value}/{self.key}.{fmt}"


ALL = Listing(ListingKind.ALL)
DOCUMENTS_PATH = f"/{DOCUMENT_PREFIX}/"
DOCUMENTS = Listing(ListingKind.DOCUMENTS)
# The kinds that are scopes of bulletins (with a page, feeds and archives).
_SCOPES = (ListingKind.ALL, ListingKind.AGENCY, ListingKind.CATEGORY, ListingKind.DOCUMENT)
# The kinds with no key: one listing each.
_KEYLESS = (ListingKind.ALL, ListingKind.DOCUMENTS)


def listings_of(agency_slug: str, category_slug: str | None) -> list[Listing]:
    """Every listing a bulletin of this agency and category appears in."""
    listings = [ALL, Listing(ListingKind.AGENCY, agency_slug)]
    if category_slug:
        listings.append(Listing(ListingKind.CATEGORY, category_slug))
    return listings


def document(key: str) -> Listing:
    """The listing of the bulletins citing one legal document (its citation key)."""
    return Listing(ListingKind.DOCUMENT, key)


def sitemap(key: str) -> Listing:
    """The build of one sitemap file: ``SITEMAP_INDEX``, ``SITEMAP_NEWS`` or a month key."""
    return Listing.from_target(f"{ListingKind.SITEMAP.value}:{key}")


def month_key(moment: datetime) -> str:
    """The month sitemap a bulletin published at `moment` is in (months are UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m")


def archive(listing: Listing, month: str) -> Listing:
    """The build of one month (``YYYY-MM``, UTC) of `listing`'s archive, or with
    ``ARCHIVE_CHECK`` the check of all its months."""
    return Listing.from_target(f"{ListingKind.ARCHIVE.value}:{listing.target}@{month}")


def archive_path(listing: Listing, month: str, part: int, fmt: str) -> str:
    """Where one RFC 5005 archive document lives: part 1 of a month at
    ``/feeds/{scope}/YYYY-MM.{fmt}``, the next ones at ``YYYY-MM-2.{fmt}`` and so on (the
    gateway and nginx match exactly this to cache past months for long)."""
    if fmt not in ARCHIVE_FORMATS or listing.kind not in _SCOPES or part < 1:
        raise ValueError(f"no archive {listing.target} {month} {part} {fmt}")
    if not _MONTH.fullmatch(month):
        raise ValueError(f"bad month {month!r}")
    scope = "all" if listing.kind is ListingKind.ALL else f"{listing.kind.value}/{listing.key}"
    name = month if part == 1 else f"{month}-{part}"
    return f"/feeds/{scope}/{name}.{fmt}"


def opml_path(fmt: str) -> str:
    """The OPML list of every feed in one format: RSS (what readers expect) at the top."""
    if fmt not in FEED_FORMATS:
        raise ValueError(fmt)
    return OPML_PATH if fmt == "rss" else f"/feeds/{fmt}.opml"


def sitemap_path(key: str, part: int = 1) -> str:
    """Where a sitemap lives. A month of more URLs than one sitemap may hold (50,000) is
    split: part 1 at the month's path, then ``/sitemaps/YYYY-MM-2.xml`` and so on."""
    if key == SITEMAP_INDEX:
        return SITEMAP_INDEX_PATH
    return f"/sitemaps/{key}.xml" if part == 1 else f"/sitemaps/{key}-{part}.xml"


def article_path(agency_slug: str, slug: str, bulletin_id: int) -> str:
    return f"/{agency_slug}/{slug}-{bulletin_id}.html"


def file_for(url_path: str) -> PurePosixPath:
    """The site-relative file that holds a URL path (no leading slash)."""
    relative = url_path.lstrip("/")
    if relative == "" or relative.endswith("/"):
        relative += "index.html"
    return PurePosixPath(relative)


def absolute(public_url: str, url_path: str) -> str:
    return public_url.rstrip("/") + url_path


def tombstone_for(url_path: str) -> PurePosixPath:
    """Where the notice for a withdrawn page lives (the gateway serves it with 410 Gone)."""
    return PurePosixPath(TOMBSTONE_DIR) / file_for(url_path)
