"""Hostile text in every text field stays text in every feed and page (issue 7, defect 6).

Each string goes into the title, summary, author, category, agency name, site title and body
at once; the feeds come from the real feed builder and the pages from the real renderer.
Feeds are read back as a reader does (feedparser: the text it would show must be the text
sent, whatever type it says the element has), pages as a browser does (an HTML5 parser: no
element or attribute may come from the text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any
from xml.etree.ElementTree import Element

import feedparser
import html5lib
import pytest
from lxml import etree

from services.feed.feeds import BuiltFeeds, build_feeds
from services.render.pages import PageRenderer
from shared.excerpt import shorten
from shared.models import BodyFormat, Bulletin
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind
from shared.slug import slugify
from tests.unit.test_properties import AGENCY_SLUG, PUBLIC, stored_bulletin

HOSTILE_TEXTS = (
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</b><img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><svg onload=alert(1)>",
    '<a href="javascript:alert(1)">bấm</a>',
    "<b onmouseover=alert(1)>đậm</b>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&amp; &#60;b&#62; &unknown; &",
    "]]><script>alert(1)</script><![CDATA[",
    "<!-- <img src=x onerror=alert(1)> -->",
    '<?xml-stylesheet href="javascript:alert(1)"?>',
    "</title><script>alert(1)</script>",
    "</style><script>alert(1)</script>",
    "</textarea><img src=x onerror=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<svg><style><img src=x onerror=alert(1)>",
    "{{ 7*7 }} {% raw %} ${7*7}",
    "Tôm & Cá \"ngon\" 'rẻ' <b>",
    "\u202egnp.exe <b>RTL</b>",
    "javascript:alert(1)",
    "\\u003cscript\\u003e \u2028 \u2029 dòng",
)
# Only these elements may carry a script in a page: the JSON-LD block and the site's files.
_OWN_SCRIPT = ("/static/",)


@dataclass(frozen=True)
class Case:
    text: str
    body_format: BodyFormat

    @property
    def settings(self) -> Settings:
        return Settings(public_url=PUBLIC, site_title=self.text, timezone="Asia/Ho_Chi_Minh")

    def bulletin(self, bulletin_id: int = 7) -> Bulletin:
        return stored_bulletin(
            title=self.text,
            body=self.text,
            body_format=self.body_format,
            agency_name=self.text,
            summary=self.text,
            author=self.text,
            category=self.text,
            category_slug=slugify(self.text),
            bulletin_id=bulletin_id,
        )


CASES = [
    Case(text, body_format)
    for text in HOSTILE_TEXTS
    for body_format in (BodyFormat.TEXT, BodyFormat.MARKDOWN)
]


def case_id(case: Case) -> str:
    return f"{case.body_format.value}-{HOSTILE_TEXTS.index(case.text)}"


# --- reading back -------------------------------------------------------------------------


def fragment(markup: str) -> Element:
    return html5lib.parseFragment(markup, container="div", namespaceHTMLElements=False)


def shown(detail: Any) -> str:
    """The text a feed reader shows for a feedparser text value, by the type it gives."""
    if detail.type == "text/plain":
        return str(detail.value)
    assert detail.type == "text/html", detail.type
    tree = fragment(detail.value)
    assert list(tree) == [], f"markup in a text field: {detail.value!r}"
    return "".join(tree.itertext())


def read_feed(document: bytes) -> Any:
    etree.fromstring(document, etree.XMLParser(recover=False, resolve_entities=False))
    feed = feedparser.parse(document)
    assert feed.bozo == 0, feed.get("bozo_exception")
    return feed


def injected(root: Element) -> list[str]:
    """Elements and attributes in a parsed document that only injected markup can explain."""
    found = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # a comment
        for name in element.attrib:
            if name.lower().startswith("on"):
                found.append(f"{element.tag}[{name}]")
        for name in ("href", "src", "action", "formaction"):
            if element.get(name, "").strip().lower().startswith("javascript:"):
                found.append(f"{element.tag}[{name}]")
        if element.tag in ("svg", "math", "img", "iframe", "object", "embed", "style", "b"):
            found.append(element.tag)
        if element.tag == "script":
            own = element.get("src", "").startswith(_OWN_SCRIPT)
            if not (own or element.get("type") == "application/ld+json"):
                found.append("script")
    return found


def body_text(body: Element) -> str:
    return " ".join("".join(body.itertext()).split())


# --- feeds --------------------------------------------------------------------------------


def all_feeds(case: Case) -> dict[str, tuple[str, BuiltFeeds]]:
    """Each listing's feeds, with the feed title a reader must show for it."""
    site = case.text
    listings = {
        "all": (ALL, site, site),
        "agency": (Listing(ListingKind.AGENCY, AGENCY_SLUG), case.text, f"{case.text} – {site}"),
        "category": (
            Listing(ListingKind.CATEGORY, slugify(case.text)),
            case.text,
            f"{case.text} – {site}",
        ),
    }
    bulletins = [case.bulletin(2), case.bulletin(1)]
    return {
        name: (feed_title, build_feeds(listing, title, bulletins, case.settings))
        for name, (listing, title, feed_title) in listings.items()
    }


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_feeds_show_hostile_text_as_text(case: Case) -> None:
    text = case.text
    for name, (feed_title, feeds) in all_feeds(case).items():
        for document in (feeds.rss, feeds.atom):
            feed = read_feed(document)
            assert shown(feed.feed.title_detail) == feed_title
            description = shown(feed.feed.subtitle_detail)  # the site-wide one names nobody
            assert text in description or name == "all"
            assert len(feed.entries) == 2
            for entry in feed.entries:
                assert shown(entry.title_detail) == text
                assert shown(entry.summary_detail) == text
                assert entry.author == text
                assert text in {tag.term for tag in entry.tags} | {tag.label for tag in entry.tags}
                (content,) = entry.content
                assert content.type == "text/html"
                body = fragment(content.value)
                assert injected(body) == [], content.value
                if case.body_format is BodyFormat.TEXT:
                    assert body_text(body) == " ".join(text.split())


def test_rss_description_is_escaped_twice_in_the_xml() -> None:
    # RSS readers render <description> as HTML, so the text arrives as its HTML source.
    feeds = all_feeds(Case("<img src=x onerror=alert(1)>", BodyFormat.TEXT))["all"][1]
    item = etree.fromstring(feeds.rss).find("channel/item")
    assert item is not None
    assert item.findtext("description") == "&lt;img src=x onerror=alert(1)&gt;"
    assert b"&amp;lt;img src=x onerror=alert(1)&amp;gt;" in feeds.rss


# --- pages --------------------------------------------------------------------------------


def parse_page(html: str) -> Element:
    document: Element = html5lib.parse(html, namespaceHTMLElements=False)
    assert injected(document) == [], injected(document)
    return document


def only(root: Element, path: str) -> Element:
    found = root.findall(path)
    assert len(found) == 1, (path, found)
    return found[0]


def text_of(root: Element, path: str) -> str:
    return "".join(only(root, path).itertext())


def meta(root: Element, key: str) -> str:
    found = [
        element.get("content", "")
        for element in root.iter("meta")
        if key in (element.get("name"), element.get("property"))
    ]
    assert len(found) == 1, (key, found)
    return found[0]


@cache
def renderer_for(case: Case) -> PageRenderer:
    return PageRenderer(case.settings)  # the site title is the hostile text too


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_article_page_shows_hostile_text_as_text(case: Case) -> None:
    text = case.text
    page = parse_page(renderer_for(case).article(case.bulletin()))

    assert text_of(page, ".//title") == f"{text} – {text}"
    assert text_of(page, ".//h1") == text
    assert text_of(page, ".//p[@class='lead']") == text
    assert text_of(page, ".//span[@class='byline__name']") == text
    assert text_of(page, ".//a[@class='brand']") == text
    assert [a.text for a in page.findall(".//nav//a")][1:] == [text, text]
    for key in ("description", "og:description", "og:title", "og:site_name", "author"):
        assert meta(page, key) == shorten(text, 160) if "description" in key else text
    assert meta(page, "article:section") == text
    data = json.loads(text_of(page, ".//script[@type='application/ld+json']"))
    assert (data["headline"], data["description"]) == (text, shorten(text, 160))
    assert data["author"]["name"] == data["publisher"]["name"] == text
    assert data["articleSection"] == text
    titles = {link.get("title") for link in page.iter("link") if link.get("rel") == "alternate"}
    assert titles == {f"{text} – Tất cả bản tin", text, f"{text} – {text}"}
    body = only(page, ".//div[@class='article__body']")
    if case.body_format is BodyFormat.TEXT:
        assert body_text(body) == " ".join(text.split())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_listing_pages_show_hostile_text_as_text(case: Case) -> None:
    text = case.text
    renderer = renderer_for(case)
    bulletin = case.bulletin()
    for listing in (ALL, Listing(ListingKind.AGENCY, AGENCY_SLUG)):
        page = parse_page(renderer.listing(listing, text, [bulletin]))
        assert text_of(page, ".//h1") == text
        assert text_of(page, ".//h3/a") == text
        assert text_of(page, ".//p[@class='item__teaser']") == shorten(text, 240)
    category = parse_page(
        renderer.listing(Listing(ListingKind.CATEGORY, slugify(text)), text, [bulletin])
    )
    assert text_of(category, ".//title") == f"{text} – {text}"
    assert text_of(category, ".//p[@class='item__meta']/a") == text  # the agency


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_withdrawn_page_shows_hostile_text_as_text(case: Case) -> None:
    text = case.text
    page = parse_page(renderer_for(case).withdrawn(case.bulletin()))
    assert text_of(page, ".//span[@class='gone__headline']") == text
    assert text_of(page, ".//p[@class='gone__notice']").startswith(f"{text} đã gỡ bỏ")
    assert meta(page, "description") == f"{text} đã gỡ bỏ bản tin này."
