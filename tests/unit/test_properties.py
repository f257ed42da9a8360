"""Properties of the real page and feed code for any text an agency can get past ingest.

Every text field is drawn from all of Unicode (surrogates, controls, combining marks, RTL
marks, emoji...), cleaned by the ingest schema itself (examples it refuses are skipped),
stored on a bulletin as ingest stores it, and rendered by the real renderer and feed builder:
- every page is HTML5 without a single parse error;
- both feeds are well-formed XML (no recovery) that feedparser reads without complaint;
- the bulletin's slug is non-empty lowercase ASCII.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import feedparser
import html5lib
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import ValidationError

from services.feed.feeds import build_feeds
from services.ingest.schemas import BulletinCreate
from services.render.pages import PageRenderer
from shared.models import Agency, BodyFormat, Bulletin
from shared.sanitize import body_to_html, clean_text
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind
from shared.slug import slugify

PUBLIC = "https://bantin.example.gov.vn"
AGENCY_SLUG = "co-quan"
SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MOMENT = datetime(2024, 3, 9, 2, 5, 6, tzinfo=UTC)
_STRICT_XML = etree.XMLParser(recover=False, resolve_entities=False, no_network=True)
# The site title is the operator's, not an agency's: one odd but fixed value (hostile site
# titles are in test_hostile_text.py). A renderer takes ~0.1 s to build, too long per example.
SITE_TITLE = "Bản tin <b>&amp;</b> \u202e\u0301"
CONFIG = Settings(public_url=PUBLIC, site_title=SITE_TITLE, timezone="Asia/Ho_Chi_Minh")
RENDERER = PageRenderer(CONFIG)

# All of Unicode, lone surrogates included (JSON can carry them: "\ud800"), with extra weight
# on what has broken pages, feeds and slugs before: markup and entity characters, CDATA ends,
# controls, NEL, noncharacters, bidi overrides, combining marks (NFD Vietnamese), emoji.
_SPICE = list("<>&\"'/;#*[]()`!-_=\n\t\r ") + [
    "]]>", "&amp;", "&#0;", "<script>", "<!--", "\x00", "\x0b", "\x85", "\x9f", "\ufdd0",
    "\ufffe", "\U0010ffff", "\ud800", "\udfff", "\u202e", "\u200f", "\u2028", "\u0301",
    "\u0302", "\u0323", "e\u0302\u0301", "\U0001f600", "\U0001f1fb\U0001f1f3", "đ", "Đ",
]  # fmt: skip
any_text = st.lists(
    st.text(st.characters(exclude_categories=()), max_size=8) | st.sampled_from(_SPICE),
    max_size=12,
).map("".join)
optional_text = st.none() | any_text
submissions = st.fixed_dictionaries(
    {
        "title": any_text,
        "body": any_text,
        "body_format": st.sampled_from([f.value for f in BodyFormat]),
        "summary": optional_text,
        "author": optional_text,
        "category": optional_text,
        "language": st.sampled_from(["vi", "en", "zh-Hant", "ar"]),
        "published_at": st.just(MOMENT.isoformat()),
    }
)


def stored_bulletin(
    *,
    title: str,
    body: str,
    body_format: BodyFormat,
    agency_name: str,
    summary: str | None,
    author: str | None,
    category: str | None,
    category_slug: str | None,
    language: str = "vi",
    bulletin_id: int = 7,
) -> Bulletin:
    """A bulletin row with its agency as the renderer and feed builder get it from the
    database (test_hostile_text.py builds its rows here too)."""
    bulletin = Bulletin(
        id=bulletin_id,
        guid=f"urn:uuid:4fbfac1c-975a-4018-8000-{bulletin_id:012d}",
        agency_id=1,
        slug=slugify(title),
        title=title,
        summary=summary,
        body_format=body_format.value,
        body_source=body,
        body_html=body_to_html(body, body_format, base_url=PUBLIC),
        author=author,
        category=category,
        category_slug=category_slug,
        language=language,
        published_at=MOMENT,
        updated_at=MOMENT,
        revision=1,
    )
    bulletin.agency = Agency(id=1, slug=AGENCY_SLUG, name=agency_name)
    return bulletin


def ingested(submission: dict[str, Any], agency_name: str) -> Bulletin:
    """The row ingest would store for `submission` (skipped if ingest would refuse it)."""
    try:
        valid = BulletinCreate.model_validate(submission)
    except ValidationError:
        reject()
    return stored_bulletin(
        title=valid.title,
        body=valid.body,
        body_format=valid.body_format,
        # Agency names are cleaned the same way when an operator creates the agency.
        agency_name=clean_text(agency_name).strip() or "Cơ quan",
        summary=valid.summary,
        author=valid.author,
        category=valid.category,
        category_slug=slugify(valid.category, fallback="khac") if valid.category else None,
        language=valid.language,
    )


def listings_and_names(bulletin: Bulletin, site_title: str) -> list[tuple[Listing, str]]:
    found = [(ALL, site_title), (Listing(ListingKind.AGENCY, AGENCY_SLUG), bulletin.agency.name)]
    if bulletin.category_slug and bulletin.category:
        found.append((Listing(ListingKind.CATEGORY, bulletin.category_slug), bulletin.category))
    return found


def assert_strict_html5(page: str) -> None:
    # strict=True raises on the first parse error: a stray control character, a broken
    # attribute, an element in the wrong place.
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)


def assert_feed_parses(document: bytes) -> None:
    etree.fromstring(document, _STRICT_XML)
    feed = feedparser.parse(document)
    assert feed.bozo == 0, feed.get("bozo_exception")
    assert len(feed.entries) == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(submission=submissions, agency_name=any_text)
def test_any_text_gives_valid_pages_feeds_and_slug(
    submission: dict[str, Any], agency_name: str
) -> None:
    bulletin = ingested(submission, agency_name)

    assert SLUG.fullmatch(bulletin.slug), bulletin.slug
    assert bulletin.category_slug is None or SLUG.fullmatch(bulletin.category_slug)

    assert_strict_html5(RENDERER.article(bulletin))
    assert_strict_html5(RENDERER.withdrawn(bulletin))
    for listing, name in listings_and_names(bulletin, SITE_TITLE):
        assert_strict_html5(RENDERER.listing(listing, name, [bulletin]))
        feeds = build_feeds(listing, name, [bulletin], CONFIG)
        assert_feed_parses(feeds.rss)
        assert_feed_parses(feeds.atom)
