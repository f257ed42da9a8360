"""The RSS 2.0, Atom 1.0 and JSON Feed 1.1 documents of one listing.

RSS and Atom are built with feedgen; JSON Feed (which feedgen does not write) with the json
module, from the same cleaned values, so the three carry the same items, ids and dates.

The output is a pure function of the arguments: no clock, no randomness. The gateway's ETag
is a hash of these bytes, so a rebuild with nothing changed must give the same bytes (the JSON
keys keep one fixed order, `version` first as the spec asks).

Text stays text in both formats, escaped for the type each element has:
- Atom declares it: titles, the subtitle and summaries are text constructs (type "text").
- RSS does not, and readers render the item and channel description as HTML and, when it
  looks like HTML, the title too (feedparser does). So those four carry the text HTML-escaped
  (hence escaped twice in the XML): a summary "<img src=x onerror=…>" shows as those characters
  and never becomes an element. A reader that shows RSS titles raw would show "&amp;" for a
  "&"; RSS gives no way to serve both kinds, and the safe one wins. dc:creator and category
  are plain text to every reader, and stay so.
- JSON Feed keeps HTML to `content_html` alone: title, summary, author names and tags are plain
  strings, as given.

Every feed names its WebSub hub and itself (discovery, W3C WebSub section 4): `<atom:link
rel="hub">` beside the `rel="self"` one in RSS, `<link rel="hub">` in Atom, `hubs` in JSON
Feed. The hub is ingest's `/hub` (services/deliver/topics.py).

History (RFC 5005 "Archived Feeds"): `build_archive` writes one archive document of a listing
(a month, or one part of a big month) with the same entries as the feeds would show, marked
`<fh:archive/>` and linked `current` (the subscription feed), `self`, and `prev-archive` /
`next-archive` to its older and newer neighbours; the subscription feeds link their newest
archive document as `prev-archive`. RSS carries these links as `atom:link` elements.

Not thread-safe: feedgen formats every RSS date between two ``locale.setlocale(LC_ALL)``
calls, which change the locale of the whole process. Build feeds only from a process's main
thread (the Celery prefork pool is fine; thread, gevent or eventlet pools are not).
"""

from __future__ import annotations

import html
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

# Safe in any order: feedgen.entry imports lxml.etree before feedgen.util, whose bare
# `import lxml` fails when imported first (so never import feedgen.util or feedgen.ext.dc first).
from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from services.deliver.topics import hub_url
from shared.excerpt import excerpt
from shared.models import Bulletin
from shared.sanitize import clean_text
from shared.settings import Settings
from shared.site import Listing, ListingKind, absolute, article_path

log = logging.getLogger(__name__)

FEED_LANGUAGE = "vi"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
GENERATOR = "Bantin"
# Longest summary made from a body when a bulletin has none, in characters.
EXCERPT_CHARS = 300
# An empty feed has no item to take its date from; a constant keeps its bytes stable.
EMPTY_FEED_UPDATED = datetime(2000, 1, 1, tzinfo=UTC)

_DC_NS = "http://purl.org/dc/elements/1.1/"
_DC_CREATOR = f"{{{_DC_NS}}}creator"
_ATOM_NS = "http://www.w3.org/2005/Atom"
_ATOM_LINK = f"{{{_ATOM_NS}}}link"
FH_NS = "http://purl.org/syndication/history/1.0"
_FH_ARCHIVE = f"{{{FH_NS}}}archive"
_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml"}


@dataclass(frozen=True)
class BuiltFeeds:
    rss: bytes
    atom: bytes
    json: bytes  # JSON Feed 1.1, UTF-8

    def by_format(self) -> Mapping[str, bytes]:
        """Each document under its format's name (``shared.site.FEED_FORMATS``)."""
        return {"rss": self.rss, "atom": self.atom, "json": self.json}


@dataclass(frozen=True)
class BuiltArchive:
    """One RFC 5005 archive document in both formats that have archives."""

    rss: bytes
    atom: bytes

    def by_format(self) -> Mapping[str, bytes]:
        """Each document under its format's name (``shared.site.ARCHIVE_FORMATS``)."""
        return {"rss": self.rss, "atom": self.atom}


@dataclass(frozen=True)
class History:
    """The RFC 5005 links of one document, each as a URL path per format ("rss", "atom").

    `archive` unset: a subscription feed, whose `prev` is its newest archive document (or
    None before there is one). Set: an archive document at the `archive` paths."""

    archive: Mapping[str, str] | None = None
    prev: Mapping[str, str] | None = None
    next: Mapping[str, str] | None = None
    # Shown after the feed's title and description in an archive document ("tháng 02/2011").
    label: str = ""


@dataclass(frozen=True)
class _Item:
    """One entry as each format writes it, built once per (bulletin, revision) and reused by
    every later build that shows it (see `_entry_cache`)."""

    rss: etree._Element  # the <item>, as feedgen builds it
    atom: etree._Element  # the <entry>
    json: str  # the JSON Feed item, serialised


# Entries by what they show: a listing rebuild under load re-renders the same 50 items, and
# an archive part up to 500, a few times a second. feedgen builds each entry in Python
# (~80 µs for RSS and Atom together); a cached one costs a deep copy in C. Bounded: an
# entry holds its body twice and its JSON once (a few KiB).
ENTRY_CACHE_SIZE = 2048
_entry_cache: OrderedDict[tuple[Any, ...], _Item] = OrderedDict()


def build_feeds(
    listing: Listing,
    title: str,
    bulletins: Sequence[Bulletin],
    settings: Settings,
    prev_archive: Mapping[str, str] | None = None,
) -> BuiltFeeds:
    """The three feeds of `listing`.

    `bulletins` are the newest items, newest first, each with `.agency` loaded; they appear in
    that order. `title` is the agency or category name, or the document's title (unused for
    the ALL listing, which is named after the site). `prev_archive`: the URL path, per
    format, of the listing's newest archive document, which RSS and Atom link as
    ``prev-archive``.
    """
    feeds = _build_safely(listing, title, bulletins, settings, History(prev=prev_archive))
    assert isinstance(feeds, BuiltFeeds)
    return feeds


def build_archive(
    listing: Listing,
    title: str,
    bulletins: Sequence[Bulletin],
    settings: Settings,
    history: History,
) -> BuiltArchive:
    """One RFC 5005 archive document of `listing` (RSS and Atom): `bulletins` as for
    `build_feeds` (newest first), `history.archive` its own paths."""
    if history.archive is None:
        raise ValueError("an archive document needs its own paths")
    archive = _build_safely(listing, title, bulletins, settings, history)
    assert isinstance(archive, BuiltArchive)
    return archive


def _build_safely(
    listing: Listing,
    title: str,
    bulletins: Sequence[Bulletin],
    settings: Settings,
    history: History,
) -> BuiltFeeds | BuiltArchive:
    try:
        return _build(listing, title, bulletins, settings, _unchanged, history)
    except ValueError:
        # lxml refuses characters XML forbids (and a lone surrogate fails to encode, a
        # UnicodeEncodeError, also a ValueError). Ingest strips them with the same clean_text,
        # so this is for rows that slipped past: one bad item must not take the whole feed
        # down. Cleaning only on this path keeps the normal build free of a regex pass over
        # every body (~6 µs per 2 KiB, 0.3 ms per feed). Any other ValueError simply happens
        # again below and propagates.
        built = _build(listing, title, bulletins, settings, clean_text, history)
        log.warning("feed %s: removed characters XML does not allow", listing.target)
        return built


def _build(
    listing: Listing,
    title: str,
    bulletins: Sequence[Bulletin],
    settings: Settings,
    clean: Callable[[str], str],
    history: History,
) -> BuiltFeeds | BuiltArchive:
    tz = settings.tz
    page_url = absolute(settings.public_url, listing.page_path)
    current = {fmt: absolute(settings.public_url, listing.feed_path(fmt)) for fmt in _TYPES}
    archive = history.archive
    rss_url = current["rss"] if archive is None else absolute(settings.public_url, archive["rss"])
    atom_url = (
        current["atom"] if archive is None else absolute(settings.public_url, archive["atom"])
    )
    json_url = absolute(settings.public_url, listing.feed_path("json"))
    hub = hub_url(settings.resolved_ingest_url)

    def history_links(fmt: str) -> list[tuple[str, str]]:
        """(rel, absolute URL) of the RFC 5005 links in `fmt`, after self (and hub)."""
        links = [] if archive is None else [("current", current[fmt])]
        for rel, paths in (("prev-archive", history.prev), ("next-archive", history.next)):
            if paths is not None:
                links.append((rel, absolute(settings.public_url, paths[fmt])))
        return links

    # One generator serves both formats: the entries are built once; the self link, the
    # content type and how text is written change between the two serialisations.
    fg = FeedGenerator()
    # dc:creator carries the author's name in RSS, whose <author> must be an e-mail address.
    # Atom has its own <author><name>, so the extension stays out of it.
    fg.register_extension("dc", _DcNamespace, _DcCreator, atom=False, rss=True)
    # feedgen writes only the self link into RSS; this adds the hub (only feeds are WebSub
    # topics: archives name none) and the RFC 5005 links after it.
    fg.register_extension("links", _RssLinks, None, atom=False, rss=True)
    fg.links.links = ([("hub", hub)] if archive is None else []) + history_links("rss")
    if archive is not None:
        fg.register_extension("fh", _FhArchive, None, atom=True, rss=True)
    fg.id(atom_url)
    feed_title = clean(_feed_title(listing, title, settings.site_title))
    # RSS requires a description.
    feed_description = clean(_feed_description(listing, title, newest=archive is None))
    if history.label:
        feed_title = f"{feed_title} – {clean(history.label)}"
        feed_description = f"{feed_description} – {clean(history.label)}"
    fg.language(FEED_LANGUAGE)
    fg.generator(GENERATOR)
    # feedgen would stamp "now" here; the latest change among the items is stable and right:
    # a correction to an older item changes the feed too.
    newest_change = max((b.updated_at for b in bulletins), default=EMPTY_FEED_UPDATED)
    fg.updated(_local(newest_change, tz))

    items = [_item(bulletin, settings, clean) for bulletin in bulletins]

    fg.title(_as_html(feed_title))
    fg.description(_as_html(feed_description))
    # The RSS channel <link> is whichever link() came last, so self first, then the page.
    fg.link(href=rss_url, rel="self", type="application/rss+xml", replace=True)
    fg.link(href=page_url, rel="alternate", type="text/html")
    # What fg.rss_str() writes, with the cached entries in place of feedgen building them
    # again: feedgen itself builds each entry on its own and appends it last, in order.
    root, document = fg._create_rss()
    channel = root.find("channel")
    assert channel is not None
    channel.extend(deepcopy(item.rss) for item in items)
    rss = _serialise(document)

    fg.title(feed_title)
    fg.description(feed_description)  # the Atom subtitle
    fg.link(href=atom_url, rel="self", type="application/atom+xml", replace=True)
    if archive is None:
        fg.link(href=hub, rel="hub")
    for rel, href in history_links("atom"):
        fg.link(href=href, rel=rel, type=_TYPES["atom"])
    fg.link(href=page_url, rel="alternate", type="text/html")
    root, document = fg._create_atom()
    root.extend(deepcopy(item.atom) for item in items)
    atom = _serialise(document)
    if archive is not None:
        return BuiltArchive(rss=rss, atom=atom)

    json_feed = _json_feed(feed_title, feed_description, page_url, json_url, hub, items)
    return BuiltFeeds(rss=rss, atom=atom, json=json_feed)


def _serialise(document: etree._ElementTree) -> bytes:
    # As feedgen's rss_str() / atom_str() with their defaults.
    return etree.tostring(document, pretty_print=False, encoding="UTF-8", xml_declaration=True)


def _item(bulletin: Bulletin, settings: Settings, clean: Callable[[str], str]) -> _Item:
    """The bulletin's entry in all three formats, from the cache when it was built before.

    Keyed by every value the entry shows (not only id and revision: another database in the
    same process, a renamed agency, a test's hand-made rows), so a hit is always right; the
    strings hash in about a microsecond. Only the normal build (`clean` unchanged) is cached:
    the cleaning fallback is rare."""
    agency = bulletin.agency
    key = (bulletin.id, bulletin.revision, bulletin.guid, bulletin.slug, bulletin.title,
           bulletin.summary, bulletin.body_html, bulletin.author, bulletin.category,
           bulletin.category_slug, bulletin.language, bulletin.published_at,
           bulletin.updated_at, agency.slug, agency.name, settings.public_url,
           settings.timezone)  # fmt: skip
    cacheable = clean is _unchanged
    if cacheable and (cached := _entry_cache.get(key)) is not None:
        _entry_cache.move_to_end(key)
        return cached
    item = _new_item(bulletin, settings, clean)
    if cacheable:
        _entry_cache[key] = item
        if len(_entry_cache) > ENTRY_CACHE_SIZE:
            _entry_cache.popitem(last=False)
    return item


def _new_item(bulletin: Bulletin, settings: Settings, clean: Callable[[str], str]) -> _Item:
    tz = settings.tz
    entry = FeedEntry()
    # dc:creator carries the author's name in RSS (see _build).
    entry.register_extension("dc", _DcCreator, atom=False, rss=True)
    # Sets the Atom id and the RSS guid with isPermaLink="false": the guid is an opaque
    # urn:uuid, never a URL, and survives corrections of the title or the slug.
    guid = clean(bulletin.guid)
    entry.id(guid)
    url = clean(
        absolute(
            settings.public_url, article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
        )
    )
    entry.link(href=url, rel="alternate", type="text/html")
    published = _local(bulletin.published_at, tz)
    updated = _local(bulletin.updated_at, tz)
    entry.published(published)  # also the RSS pubDate
    entry.updated(updated)
    author = clean(bulletin.author or bulletin.agency.name)
    entry.author(name=author)
    entry.dc.creator = author  # type: ignore[attr-defined]
    tag = clean(bulletin.category) if bulletin.category else None
    if tag is not None:
        entry.category(term=clean(bulletin.category_slug or tag), label=tag)
    body = clean(bulletin.body_html)
    summary = clean(bulletin.summary) if bulletin.summary else excerpt(body, EXCERPT_CHARS)
    title = clean(bulletin.title)

    entry.title(_as_html(title))
    if summary:  # else RSS takes the body as the description
        entry.description(_as_html(summary))
    # A CDATA section cannot hold "]]>". lxml >= 5.3 splits the section there, older lxml
    # raises; plain escaped text is the same HTML to every reader and valid with any lxml.
    entry.content(body, type="CDATA" if "]]>" not in body else None)
    rss = entry.rss_entry()

    entry.title(title)
    if summary:
        entry.summary(summary, type="text")
    entry.content(body, type="html")  # escaped HTML; "CDATA" is not Atom
    atom = entry.atom_entry()

    fields: dict[str, Any] = {
        "id": guid,  # as Atom's id: opaque, unchanged by corrections
        "url": url,
        "title": title,
    }
    if summary:  # as Atom: no summary element when there is nothing to say
        fields["summary"] = summary
    fields |= {
        "content_html": body,
        # RFC 3339, in the site's zone, whole seconds: Atom's published and updated.
        "date_published": published.isoformat(),
        "date_modified": updated.isoformat(),
        "authors": [{"name": author}],
    }
    if tag is not None:
        fields["tags"] = [tag]
    fields["language"] = clean(bulletin.language or FEED_LANGUAGE)
    return _Item(rss=rss, atom=atom, json=_json_dumps(fields))


def _json_dumps(value: Any) -> str:
    # Keys in the order written (never sorted); raw UTF-8, not \u escapes. A lone surrogate
    # fails to encode later, a ValueError, like the XML builds (see build_feeds).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _json_feed(
    title: str,
    description: str,
    page_url: str,
    feed_url: str,
    hub: str,
    items: Sequence[_Item],
) -> bytes:
    """The JSON Feed 1.1 document: the Atom feed's items, ids and dates, in the same order."""
    document: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": title,
        "home_page_url": page_url,
        "feed_url": feed_url,
        "description": description,
        "language": FEED_LANGUAGE,
        "hubs": [{"type": "WebSub", "url": hub}],
        "items": [],
    }
    # `items` comes last: the document's text ends with its empty list, where the items'
    # cached texts go, as json.dumps would join them (same separators).
    head = _json_dumps(document)
    assert head.endswith("[]}")
    text = head[:-2] + ",".join(item.json for item in items) + "]}"
    return text.encode("utf-8")


def _feed_title(listing: Listing, title: str, site_title: str) -> str:
    if listing.kind is ListingKind.ALL:
        return site_title
    return f"{title} – {site_title}"


def _feed_description(listing: Listing, title: str, *, newest: bool = True) -> str:
    # An archive holds a month's bulletins, not the newest ones.
    which = "Các bản tin mới nhất" if newest else "Các bản tin"
    if listing.kind is ListingKind.ALL:
        return f"{which} của mọi cơ quan"
    if listing.kind is ListingKind.AGENCY:
        return f"{which} của {title}"
    if listing.kind is ListingKind.DOCUMENT:
        return f"{which} nhắc đến {title}"
    return f"{which} thuộc chuyên mục {title}"


def _local(moment: datetime, tz: ZoneInfo) -> datetime:
    # Readers show the offset they are given: +07:00, not UTC. Whole seconds, as RFC 822
    # has no fractions and both formats should state the same instant.
    if moment.tzinfo is None:
        # astimezone() would read a naive value as the server's local time, silently.
        raise ValueError("naive datetime given to a feed")
    return moment.astimezone(tz).replace(microsecond=0)


def _as_html(text: str) -> str:
    """Plain text as the HTML source that shows it: for RSS elements readers render as HTML."""
    return html.escape(text, quote=False)


class _DcNamespace(BaseExtension):
    """Declares the dc prefix on <rss>.

    feedgen's own dc extension walks all 15 Dublin Core fields with hasattr/getattr for every
    item: +0.45 ms on a 50-item RSS build (~12 %). This one knows it only writes dc:creator.
    """

    def extend_ns(self) -> dict[str, str]:
        return {"dc": _DC_NS}


class _DcCreator(BaseEntryExtension):
    def __init__(self) -> None:
        self.creator = ""

    def extend_rss(self, item: etree._Element) -> etree._Element:
        if self.creator:
            etree.SubElement(item, _DC_CREATOR).text = self.creator
        return item


class _RssLinks(BaseExtension):
    """`<atom:link rel=…>`s (the hub, the RFC 5005 links) after the channel's `rel="self"`
    one, in the order given (the atom prefix is declared by feedgen already)."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str]] = []  # (rel, href)

    def extend_ns(self) -> dict[str, str]:
        return {}

    def extend_rss(self, feed: etree._Element) -> etree._Element:
        channel = feed.find("channel")
        if channel is None:
            return feed
        anchor = channel.find(_ATOM_LINK)
        for rel, href in self.links:
            attributes = {"href": href, "rel": rel}
            if rel != "hub":
                attributes["type"] = _TYPES["rss"]
            link = etree.Element(_ATOM_LINK, attributes)
            if anchor is not None:
                anchor.addnext(link)
            else:
                channel.append(link)
            anchor = link
        return feed


class _FhArchive(BaseExtension):
    """`<fh:archive/>`: this document is an archive (RFC 5005 section 4), in the RSS
    channel and the Atom feed element."""

    def extend_ns(self) -> dict[str, str]:
        return {"fh": FH_NS}

    def extend_rss(self, feed: etree._Element) -> etree._Element:
        channel = feed.find("channel")
        if channel is not None:
            etree.SubElement(channel, _FH_ARCHIVE)
        return feed

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        etree.SubElement(feed, _FH_ARCHIVE)
        return feed


def _unchanged(text: str) -> str:
    return text
