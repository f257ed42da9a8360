"""HTML pages of the public site: one article page per bulletin, and the index pages (home,
agencies, categories, each cited legal document's, /van-ban/ of the most cited, /feeds/).

A withdrawn bulletin's article page is replaced by a short notice (``withdrawn``), which the
gateway serves with 410 Gone from the bulletin's tombstone (``shared.site.tombstone_for``).

Every page is rendered from a template in ``templates/``; the templates get plain values
prepared here (dates already in the site's zone, absolute URLs, the JSON-LD object), so they
hold layout only. Autoescaping is on everywhere: the values written unescaped are
``body_html``, which the ingest side has already sanitised, and the lead and body with their
citation links (``shared.citations.linkify_text`` escapes the lead; ``linkify_html`` only adds
links to the sanitised body).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from markupsafe import Markup

from shared import citations
from shared.excerpt import excerpt, shorten
from shared.models import Bulletin, LegalDocument
from shared.settings import Settings
from shared.site import (
    ALL,
    DOCUMENTS_PATH,
    FEEDS_PAGE_PATH,
    Listing,
    ListingKind,
    absolute,
    article_path,
    document,
    listings_of,
    opml_path,
)
from shared.storage import Storage

_HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"

# FeedLinks (and their badges' HTML) kept per renderer: one per listing and name, so this
# bounds memory on a site with very many agencies and categories, not the common case.
FEED_LINK_CACHE = 4096
DESCRIPTION_CHARS = 160  # what search engines show of a meta description
EXCERPT_CHARS = 240  # a listing item's teaser when the bulletin has no summary
TAGLINE = "Thông tin chính thức do các cơ quan nhà nước công bố."
UI_LANGUAGE = "vi"  # the site's own words (header, toolbar, footer) are Vietnamese
# Open Graph wants language_TERRITORY; a language not listed here gets no og:locale.
_OG_LOCALES = {"vi": "vi_VN", "en": "en_US", "fr": "fr_FR", "zh": "zh_CN", "km": "km_KH"}
# (format, media type, visible name): each feed's <link rel="alternate"> and footer link, in order.
_FEED_TYPES = (
    ("rss", "application/rss+xml", "RSS"),
    ("atom", "application/atom+xml", "Atom"),
    ("json", "application/feed+json", "JSON Feed"),
)


def _static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in _static_files():
        # The name is hashed too, so renaming a file also busts caches.
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:10]


STATIC_VERSION: str = _static_version()


def install_static(storage: Storage) -> None:
    """Copy the CSS and JS the pages link to into the site, under ``static/``."""
    for path in _static_files():
        storage.put(f"static/{path.name}", path.read_bytes())


def _teaser(bulletin: Bulletin, limit: int) -> str:
    """The summary, or the start of the body, as plain text of at most `limit` characters."""
    if bulletin.summary:
        return shorten(bulletin.summary, limit)
    return excerpt(bulletin.body_html, limit)


def _aware(moment: datetime) -> datetime:
    # Rows keep naive UTC in the database; a bulletin built by hand may carry the same.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FeedLink:
    title: str  # the feed's name, as a feed reader lists it
    label: str  # the same scope as a human reads it in the footer
    follow: str  # "Theo dõi …": with " qua RSS" it names the link out of context
    rss: str
    atom: str
    json: str

    def alternates(self) -> list[dict[str, str]]:
        # `name` is the visible badge; `context` is the start of the link text that is only
        # read out (WCAG technique C7), so a list of links still says whose feed each is.
        return [
            {
                "type": mime,
                "href": getattr(self, fmt),
                "title": self.title,
                "name": name,
                "context": f"{self.follow} qua ",
            }
            for fmt, mime, name in _FEED_TYPES
        ]


class PageRenderer:
    """Renders pages to strings; writing them out is the caller's business."""

    def __init__(self, settings: Settings, *, static_base: str = "/static") -> None:
        """`static_base`: where the pages' CSS and script are served from. The site serves
        them at /static; the console's preview, on ingest's own origin, elsewhere."""
        self.settings = settings
        self._tz = settings.tz
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates ship with the code: never stat them per render
        )
        # Keep Vietnamese readable in the JSON-LD; |tojson still escapes < > & ' for HTML.
        self.env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
        self.env.filters["vn_date"] = self._vn_date
        self.env.filters["vn_datetime"] = self._vn_datetime
        self.env.filters["iso"] = self._iso
        self.env.globals.update(
            site_title=settings.site_title,
            static_version=STATIC_VERSION,
            static_base=static_base,
            home_path=ALL.page_path,
            feeds_page_path=FEEDS_PAGE_PATH,
            documents_path=DOCUMENTS_PATH,
            ui_lang=UI_LANGUAGE,
            tagline=TAGLINE,
        )
        # A page's feed links (three feeds, three formats: head links, footer badges, the
        # "follow" block) were half an article's render time, and a site has few distinct
        # ones (its listings): each listing's FeedLink is made once, and the `feed_links`
        # macro's HTML once per FeedLink, here, instead of once per page.
        self._feed_link = functools.lru_cache(maxsize=FEED_LINK_CACHE)(self._new_feed_link)
        feed_links = self.env.get_template("_macros.html").module.feed_links  # type: ignore[attr-defined]
        self.env.globals["feed_links"] = functools.lru_cache(maxsize=FEED_LINK_CACHE)(feed_links)
        self._article = self.env.get_template("article.html")
        self._listing = self.env.get_template("listing.html")
        self._withdrawn = self.env.get_template("withdrawn.html")
        self._feeds = self.env.get_template("feeds.html")
        self._documents = self.env.get_template("documents.html")

    # -- dates ---------------------------------------------------------------------------

    def _local(self, moment: datetime) -> datetime:
        return _aware(moment).astimezone(self._tz)

    def _vn_date(self, moment: datetime) -> str:
        return self._local(moment).strftime("%d/%m/%Y")

    def _vn_datetime(self, moment: datetime) -> str:
        return self._local(moment).strftime("%H:%M %d/%m/%Y")

    def _iso(self, moment: datetime) -> str:
        return self._local(moment).isoformat(timespec="seconds")

    # -- helpers -------------------------------------------------------------------------

    def _render(self, template: Template, *, lang: str, **context: Any) -> str:
        ui_lang_attr = Markup("") if lang == UI_LANGUAGE else Markup(f' lang="{UI_LANGUAGE}"')
        return template.render(lang=lang, ui_lang_attr=ui_lang_attr, **context)

    def _url(self, path: str) -> str:
        return absolute(self.settings.public_url, path)

    def absolute(self, path: str) -> str:
        return self._url(path)

    def feed_link(self, listing: Listing, name: str) -> FeedLink:
        """A listing's feeds, named as a reader lists them (`name`: the agency or category)."""
        return self._feed_link(listing, name)

    def _new_feed_link(self, listing: Listing, name: str) -> FeedLink:
        site = self.settings.site_title
        if listing.kind is ListingKind.ALL:
            title, label = f"{site} – Tất cả bản tin", "Tất cả bản tin"
            follow = "Theo dõi tất cả bản tin"
        elif listing.kind is ListingKind.AGENCY:
            title, label = name, name
            follow = f"Theo dõi bản tin của {name}"
        elif listing.kind is ListingKind.DOCUMENT:
            title, label = f"{site} – {name}", f"Văn bản {name}"
            follow = f"Theo dõi văn bản {name}"
        else:
            title, label = f"{site} – {name}", f"Chuyên mục {name}"
            follow = f"Theo dõi chuyên mục {name}"
        return FeedLink(
            title=title,
            label=label,
            follow=follow,
            rss=self._url(listing.feed_path("rss")),
            atom=self._url(listing.feed_path("atom")),
            json=self._url(listing.feed_path("json")),
        )

    def _bulletin_feeds(self, bulletin: Bulletin) -> list[tuple[ListingKind, FeedLink]]:
        names = {
            ListingKind.ALL: "",
            ListingKind.AGENCY: bulletin.agency.name,
            ListingKind.CATEGORY: bulletin.category or bulletin.category_slug or "",
        }
        return [
            (listing.kind, self._feed_link(listing, names[listing.kind]))
            for listing in listings_of(bulletin.agency.slug, bulletin.category_slug)
        ]

    def _modified(self, bulletin: Bulletin) -> datetime:
        # A back-dated bulletin must never claim it was modified before it was published.
        published = _aware(bulletin.published_at)
        if bulletin.updated_at is None:
            return published
        return max(published, _aware(bulletin.updated_at))

    def _description(self, bulletin: Bulletin) -> str:
        return _teaser(bulletin, DESCRIPTION_CHARS)

    @staticmethod
    def _document_path(doc: citations.Document | LegalDocument) -> str:
        # Site-relative, like the page's other links (agency, category).
        return document(doc.key).page_path

    def _citation_ld(self, doc: citations.Document) -> dict[str, Any]:
        """A cited document as schema.org Legislation (a CreativeWork, so `citation` takes it)."""
        data: dict[str, Any] = {
            "@type": "Legislation",
            "name": doc.title,
            "legislationIdentifier": doc.identifier,
            "legislationType": doc.doc_type,
        }
        if doc.issued_on is not None:
            data["legislationDate"] = doc.issued_on.isoformat()
        data["url"] = self._url(self._document_path(doc))
        return data

    def _json_ld(self, bulletin: Bulletin, url: str, description: str) -> dict[str, Any]:
        agency = {
            "@type": "GovernmentOrganization",
            "name": bulletin.agency.name,
            "url": self._url(Listing(ListingKind.AGENCY, bulletin.agency.slug).page_path),
        }
        data: dict[str, Any] = {
            "@context": "https://schema.org",
            "@type": "NewsArticle",
            "headline": bulletin.title,
            "description": description,
            "inLanguage": bulletin.language,
            "datePublished": self._iso(bulletin.published_at),
            "dateModified": self._iso(self._modified(bulletin)),
            "url": url,
            "mainEntityOfPage": {"@type": "WebPage", "@id": url},
            "identifier": bulletin.guid,
            "author": {"@type": "Person", "name": bulletin.author} if bulletin.author else agency,
            "publisher": agency,
        }
        if bulletin.category:
            data["articleSection"] = bulletin.category
        return data

    # -- pages ---------------------------------------------------------------------------

    def article(self, bulletin: Bulletin, documents: Sequence[citations.Document] = ()) -> str:
        """The article page. `documents`: what the bulletin cites (citations.extract_bulletin):
        their mentions in the lead and body link to each document's page, and a list below
        the body names them all (the title stays plain: its citations are in that list)."""
        agency = bulletin.agency
        url = self._url(article_path(agency.slug, bulletin.slug, bulletin.id))
        description = self._description(bulletin)
        category_path = (
            Listing(ListingKind.CATEGORY, bulletin.category_slug).page_path
            if bulletin.category_slug
            else None
        )
        language = bulletin.language or UI_LANGUAGE
        feeds = self._bulletin_feeds(bulletin)
        # Both linkify functions escape or keep sanitised what they are given, so their
        # output is markup; with no documents the page is what it always was.
        path = self._document_path
        lead: str | Markup | None = bulletin.summary
        body = Markup(bulletin.body_html)
        json_ld = self._json_ld(bulletin, url, description)
        if documents:
            if bulletin.summary:
                lead = Markup(citations.linkify_text(bulletin.summary, documents, path))
            body = Markup(citations.linkify_html(bulletin.body_html, documents, path))
            json_ld["citation"] = [self._citation_ld(doc) for doc in documents]
        return self._render(
            self._article,
            bulletin=bulletin,
            lead=lead,
            body_html=body,
            cited=[{"title": doc.title, "path": path(doc)} for doc in documents],
            lang=language,
            og_locale=_OG_LOCALES.get(language.split("-")[0].lower()),
            canonical=url,
            description=description,
            agency_path=Listing(ListingKind.AGENCY, agency.slug).page_path,
            category_name=bulletin.category or bulletin.category_slug,
            category_path=category_path,
            modified=self._modified(bulletin),
            feeds=[feed for _, feed in feeds],
            # The "follow" block offers the feeds nearest the bulletin: its agency's and its
            # category's (the site-wide ones stay in the footer).
            follow_feeds=[feed for kind, feed in feeds if kind is not ListingKind.ALL],
            json_ld=json_ld,
        )

    def listing(self, listing: Listing, heading: str, bulletins: Sequence[Bulletin]) -> str:
        is_home = listing.kind is ListingKind.ALL
        title = heading if is_home else f"{heading} – {self.settings.site_title}"
        if is_home:
            description = TAGLINE
        elif listing.kind is ListingKind.AGENCY:
            description = f"Bản tin mới nhất của {heading}."
        elif listing.kind is ListingKind.DOCUMENT:
            description = f"Các bản tin nhắc đến {heading}."
        else:
            description = f"Bản tin mới nhất thuộc chuyên mục {heading}."
        feed = self._feed_link(listing, heading)
        items = [
            {
                "bulletin": b,
                "path": article_path(b.agency.slug, b.slug, b.id),
                "agency_path": Listing(ListingKind.AGENCY, b.agency.slug).page_path,
                "teaser": _teaser(b, EXCERPT_CHARS),
            }
            for b in bulletins
        ]
        return self._render(
            self._listing,
            kind=listing.kind.value,
            heading=heading,
            page_title=title,
            lang=UI_LANGUAGE,
            og_locale=_OG_LOCALES[UI_LANGUAGE],
            canonical=self._url(listing.page_path),
            description=description,
            feeds=[feed],
            # A document's page offers its feeds up top too: following a decision is what
            # a reader comes to that page for.
            follow_feed=feed if listing.kind is ListingKind.DOCUMENT else None,
            items=items,
        )

    def documents_index(self, rows: Sequence[tuple[LegalDocument, int]]) -> str:
        """The /van-ban/ page: the most cited documents (shared.listings.most_cited's rows,
        each with how many published bulletins cite it), most cited first."""
        heading = "Văn bản được nhắc đến nhiều nhất"
        return self._render(
            self._documents,
            heading=heading,
            page_title=f"{heading} – {self.settings.site_title}",
            lang=UI_LANGUAGE,
            og_locale=_OG_LOCALES[UI_LANGUAGE],
            canonical=self._url(DOCUMENTS_PATH),
            description="Các văn bản pháp luật được các bản tin nhắc đến nhiều nhất.",
            feeds=[self._feed_link(ALL, "")],
            rows=[
                {
                    "title": doc.title,
                    "type": doc.doc_type,
                    "path": self._document_path(doc),
                    # Vietnamese groups thousands with dots: 1.234 bản tin.
                    "count": f"{count:,}".replace(",", "."),
                }
                for doc, count in rows
            ],
        )

    def feed_directory(self, listings: Sequence[tuple[Listing, str]]) -> str:
        """The /feeds/ page: every listing (with its name) and its feeds, by kind, and the
        OPML files."""
        titles = {
            ListingKind.ALL: ("tat-ca", "Tất cả bản tin"),
            ListingKind.AGENCY: ("co-quan", "Theo cơ quan ban hành"),
            ListingKind.CATEGORY: ("chuyen-muc", "Theo chuyên mục"),
        }
        sections = [
            {
                "id": section_id,
                "title": title,
                "rows": [
                    {
                        "name": "Tất cả bản tin" if kind is ListingKind.ALL else name,
                        "path": listing.page_path,
                        "feed": self._feed_link(listing, name),
                    }
                    for listing, name in listings
                    if listing.kind is kind
                ],
            }
            for kind, (section_id, title) in titles.items()
        ]
        opml_names = {"rss": "OPML – RSS", "atom": "OPML – Atom", "json": "OPML – JSON Feed"}
        heading = "Nguồn tin"
        return self._render(
            self._feeds,
            heading=heading,
            page_title=f"{heading} – {self.settings.site_title}",
            lang=UI_LANGUAGE,
            og_locale=_OG_LOCALES[UI_LANGUAGE],
            canonical=self._url(FEEDS_PAGE_PATH),
            description="Mọi nguồn tin RSS, Atom và JSON Feed, theo cơ quan và chuyên mục.",
            feeds=[self._feed_link(ALL, "")],
            sections=sections,
            opml_files=[
                {"name": opml_names[fmt], "href": opml_path(fmt)} for fmt, _, _ in _FEED_TYPES
            ],
        )

    def withdrawn(self, bulletin: Bulletin) -> str:
        """The notice left at a withdrawn bulletin's URL: who withdrew it, and where to go,
        with the agency's public notice when it gave one (plain text, escaped).

        Nothing that would keep the bulletin alive elsewhere: no canonical URL, Open Graph or
        JSON-LD, no feeds of the bulletin's agency or category (only the site-wide ones), and
        ``noindex`` so search engines drop the page.
        """
        agency = bulletin.agency
        language = bulletin.language or UI_LANGUAGE
        # Paragraphs at blank lines, each a list of its lines (the template escapes them
        # and joins lines with <br>): the agency typed plain text.
        text = (bulletin.withdrawal_notice or "").replace("\r\n", "\n").strip()
        blocks = (block.strip() for block in re.split(r"\n\s*\n", text))
        notice = [[line.strip() for line in block.split("\n")] for block in blocks if block]
        return self._render(
            self._withdrawn,
            bulletin=bulletin,
            lang=UI_LANGUAGE,
            # The original title keeps its own language inside the Vietnamese notice.
            title_lang=None if language == UI_LANGUAGE else language,
            description=f"{agency.name} đã gỡ bỏ bản tin này.",
            agency_path=Listing(ListingKind.AGENCY, agency.slug).page_path,
            feeds=[self._feed_link(ALL, "")],
            notice=notice,
        )
