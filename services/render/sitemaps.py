"""Sitemaps, robots.txt and the feed directory (OPML and the /feeds/ page).

- ``/sitemaps/YYYY-MM.xml``: every published bulletin whose publication time falls in that
  month (UTC), with ``lastmod`` = its last change. A month's URLs stay in its file for ever,
  so a crawler re-reads only the months whose ``lastmod`` in the index moved. (Past
  ``MAX_URLS`` a month goes on in ``YYYY-MM-2.xml`` and so on.)
- ``/sitemap.xml``: the index over the non-empty months.
- ``/sitemaps/news.xml``: Google News sitemap of the last ``NEWS_WINDOW`` (Google reads two
  days). Only while that window has an article: a urlset must hold at least one ``<url>``
  (sitemap.xsd: ``url`` has the default minOccurs, 1), so there is no valid empty news
  sitemap, and ``news_sitemap`` gives none; the file is then deleted.
- ``/robots.txt`` names the index and, while it exists, the news sitemap (a Sitemap line
  to a 404 is an error in Search Console); ``/feeds.opml`` (RSS), ``/feeds/atom.opml`` and
  ``/feeds/json.opml`` list every feed for a reader to import; ``/feeds/`` shows them.

Builders take plain values and return bytes: the same rows give the same bytes (no build
time anywhere), so the gateway's hash-of-bytes ETag only changes when the content does.
The render worker runs them as coalesced listing builds (``ListingKind.SITEMAP``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import Agency, Bulletin, BulletinStatus
from shared.site import absolute, article_path, sitemap_path

SITEMAP_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
NEWS_NS = "http://www.google.com/schemas/sitemap-news/0.9"
NEWS_WINDOW = timedelta(days=2)  # Google News: "articles created in the last two days"
NEWS_MAX_URLS = 1000  # the most Google reads from one news sitemap
MAX_URLS = 50_000  # the most one sitemap may list (sitemaps.org): a bigger month is split
OPML_DOCS = "http://opml.org/spec2.opml"
# Characters XML 1.0 cannot carry at all (lxml refuses them): dropped from titles.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_text(text: str) -> str:
    """`text` as an XML text node can hold it: NFC, without the characters XML forbids."""
    return _NOT_XML.sub("", unicodedata.normalize("NFC", text))


def w3c(moment: datetime) -> str:
    """W3C Datetime in UTC, to the second (a naive value is taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _child(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = xml_text(text)
    return element


# -- documents --------------------------------------------------------------------------


@dataclass(frozen=True)
class Url:
    loc: str
    lastmod: datetime


@dataclass(frozen=True)
class NewsUrl:
    loc: str
    published: datetime
    title: str
    language: str


def urlset(urls: Iterable[Url]) -> bytes:
    """A sitemap (sitemaps.org 0.9) of these URLs, in the order given."""
    root = etree.Element(f"{{{SITEMAP_NS}}}urlset", nsmap={None: SITEMAP_NS})
    for url in urls:
        entry = etree.SubElement(root, f"{{{SITEMAP_NS}}}url")
        _child(entry, f"{{{SITEMAP_NS}}}loc", url.loc)
        _child(entry, f"{{{SITEMAP_NS}}}lastmod", w3c(url.lastmod))
    return _serialize(root)


def sitemap_index(sitemaps: Iterable[Url]) -> bytes:
    """A sitemap index over these sitemaps."""
    root = etree.Element(f"{{{SITEMAP_NS}}}sitemapindex", nsmap={None: SITEMAP_NS})
    for sitemap in sitemaps:
        entry = etree.SubElement(root, f"{{{SITEMAP_NS}}}sitemap")
        _child(entry, f"{{{SITEMAP_NS}}}loc", sitemap.loc)
        _child(entry, f"{{{SITEMAP_NS}}}lastmod", w3c(sitemap.lastmod))
    return _serialize(root)


def news_language(language: str) -> str:
    """The code Google News wants: ISO 639 (2 or 3 letters), or zh-cn / zh-tw."""
    code = language.strip().lower().replace("_", "-")
    if code in ("zh-cn", "zh-tw"):
        return code
    if code in ("zh-hans", "zh-sg"):
        return "zh-cn"
    if code in ("zh-hant", "zh-hk", "zh-mo"):
        return "zh-tw"
    primary = code.split("-")[0]
    return primary if re.fullmatch("[a-z]{2,3}", primary) else "vi"


def news_sitemap(urls: Sequence[NewsUrl], publication: str) -> bytes | None:
    """The news sitemap of these URLs, or None when there are none: write no file then (and
    delete any old one), since an empty urlset is invalid against the sitemap XSD."""
    return news_urlset(urls, publication) if urls else None


def news_urlset(urls: Iterable[NewsUrl], publication: str) -> bytes:
    """A Google News sitemap: each URL with its publication (site title, language), date
    and title. Valid only with at least one URL: callers use ``news_sitemap``."""
    root = etree.Element(f"{{{SITEMAP_NS}}}urlset", nsmap={None: SITEMAP_NS, "news": NEWS_NS})
    for url in urls:
        entry = etree.SubElement(root, f"{{{SITEMAP_NS}}}url")
        _child(entry, f"{{{SITEMAP_NS}}}loc", url.loc)
        news = etree.SubElement(entry, f"{{{NEWS_NS}}}news")
        pub = etree.SubElement(news, f"{{{NEWS_NS}}}publication")
        _child(pub, f"{{{NEWS_NS}}}name", publication)
        _child(pub, f"{{{NEWS_NS}}}language", news_language(url.language))
        _child(news, f"{{{NEWS_NS}}}publication_date", w3c(url.published))
        _child(news, f"{{{NEWS_NS}}}title", url.title)
    return _serialize(root)


def robots_txt(
    public_url: str, *, with_sitemaps: bool = True, with_news: bool | None = None
) -> bytes:
    """Everything may be crawled; the sitemaps (once there are any) say where the articles
    are. `with_sitemaps`: the index exists; `with_news` (default: as `with_sitemaps`): the
    news sitemap exists, i.e. the last two days have an article (``news_sitemap``)."""
    if with_news is None:
        with_news = with_sitemaps
    lines = ["User-agent: *", "Allow: /"]
    named = [sitemap_path("index")] if with_sitemaps else []
    if with_news:
        named.append(sitemap_path("news"))
    if named:
        lines.append("")
        lines += [f"Sitemap: {absolute(public_url, path)}" for path in named]
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class FeedOutline:
    """One listing in the feed directory: its name, its page and its feed in one format."""

    text: str
    html_url: str
    xml_url: str


@dataclass(frozen=True)
class FeedGroup:
    """A folder of outlines ("Cơ quan ban hành", "Chuyên mục"); no title: top level."""

    title: str | None
    outlines: Sequence[FeedOutline]


def opml(title: str, groups: Iterable[FeedGroup], version: str) -> bytes:
    """OPML 2.0 subscription list: ``type="rss"`` outlines (what readers import, whatever
    the feed's format), folders for the groups that have a title. `version` names the
    format (RSS2, ATOM, JSON)."""
    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    _child(head, "title", title)
    _child(head, "docs", OPML_DOCS)
    body = etree.SubElement(root, "body")
    for group in groups:
        if not group.outlines:
            continue
        parent = body
        if group.title is not None:
            name = xml_text(group.title)
            parent = etree.SubElement(body, "outline", text=name, title=name)
        for outline in group.outlines:
            name = xml_text(outline.text)
            etree.SubElement(
                parent,
                "outline",
                type="rss",
                version=version,
                text=name,
                title=name,
                xmlUrl=outline.xml_url,
                htmlUrl=outline.html_url,
            )
    return _serialize(root)


# -- queries ------------------------------------------------------------------------------
# Each filters on status and a published_at range: the (status, published_at, id) index.

_PUBLISHED = Bulletin.status == BulletinStatus.PUBLISHED


def month_bounds(key: str) -> tuple[datetime, datetime]:
    """[start, end) of a month key ``YYYY-MM``, in UTC."""
    start = datetime.strptime(key, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


@dataclass(frozen=True)
class MonthSummary:
    """What a month sitemap shows, in a few numbers: built by the month's build from its
    rows and by the index's from aggregates; a difference means the month is stale."""

    key: str
    count: int
    id_sum: int
    lastmod: datetime

    @property
    def fingerprint(self) -> str:
        return f"{self.count}:{self.id_sum}:{w3c(self.lastmod)}"

    @property
    def parts(self) -> int:
        """How many sitemap files the month takes."""
        return -(-self.count // MAX_URLS)


def _latest(*moments: datetime | None) -> datetime:
    return max(m if m.tzinfo is not None else m.replace(tzinfo=UTC) for m in moments if m)


def month_rows(session: Session, public_url: str, key: str) -> tuple[list[Url], MonthSummary]:
    """The month's published articles, oldest first, and their summary."""
    start, end = month_bounds(key)
    rows = session.execute(
        select(
            Bulletin.id,
            Bulletin.slug,
            Agency.slug.label("agency"),
            Bulletin.published_at,
            Bulletin.updated_at,
        )
        .join(Agency, Agency.id == Bulletin.agency_id)
        .where(_PUBLISHED, Bulletin.published_at >= start, Bulletin.published_at < end)
        .order_by(Bulletin.published_at, Bulletin.id)
    ).all()
    urls = [
        Url(
            absolute(public_url, article_path(row.agency, row.slug, row.id)),
            _latest(row.published_at, row.updated_at),
        )
        for row in rows
    ]
    lastmod = max((url.lastmod for url in urls), default=start)
    summary = MonthSummary(key, len(rows), sum(row.id for row in rows), lastmod)
    return urls, summary


def month_summaries(session: Session) -> list[MonthSummary]:
    """One summary per month that has a published bulletin, oldest first.

    Two index lookups per such month (its aggregates, then the first row past it), so
    empty stretches between months cost nothing."""
    summaries: list[MonthSummary] = []
    first = session.scalar(select(func.min(Bulletin.published_at)).where(_PUBLISHED))
    while first is not None:
        start, end = month_bounds(first.astimezone(UTC).strftime("%Y-%m"))
        in_month = (_PUBLISHED, Bulletin.published_at >= start, Bulletin.published_at < end)
        row = session.execute(
            select(
                func.count(Bulletin.id),
                func.sum(Bulletin.id),
                func.max(Bulletin.published_at),
                func.max(Bulletin.updated_at),
            ).where(*in_month)
        ).one()
        count, id_sum, published, updated = row
        summaries.append(
            MonthSummary(
                start.strftime("%Y-%m"), int(count), int(id_sum or 0), _latest(published, updated)
            )
        )
        first = session.scalar(
            select(func.min(Bulletin.published_at)).where(_PUBLISHED, Bulletin.published_at >= end)
        )
    return summaries


def news_rows(session: Session, public_url: str, now: datetime) -> list[tuple[int, int, NewsUrl]]:
    """(id, revision, entry) of the articles published in the last ``NEWS_WINDOW``, newest
    first."""
    rows = session.execute(
        select(
            Bulletin.id,
            Bulletin.revision,
            Bulletin.slug,
            Agency.slug.label("agency"),
            Bulletin.published_at,
            Bulletin.title,
            Bulletin.language,
        )
        .join(Agency, Agency.id == Bulletin.agency_id)
        .where(_PUBLISHED, Bulletin.published_at >= now - NEWS_WINDOW)
        .order_by(Bulletin.published_at.desc(), Bulletin.id.desc())
        .limit(NEWS_MAX_URLS)
    ).all()
    return [
        (
            row.id,
            row.revision,
            NewsUrl(
                absolute(public_url, article_path(row.agency, row.slug, row.id)),
                row.published_at,
                row.title,
                row.language or "vi",
            ),
        )
        for row in rows
    ]
