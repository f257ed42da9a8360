"""JSON Feed 1.1: valid against the spec's schema, and the Atom feed's items in another format."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import update

from services.feed.feeds import JSON_FEED_VERSION, BuiltFeeds
from services.feed.jobs import write_feeds
from shared.db import create_schema, session_scope
from shared.models import Agency, Bulletin, BulletinStatus
from shared.runtime import Runtime
from shared.sanitize import clean_text, sanitize_html
from shared.settings import Settings
from shared.site import ALL, FEED_FORMATS, Listing, ListingKind, file_for
from shared.storage import LocalStorage
from tests.unit.feed.test_feeds import (
    AGENCY_LISTING,
    CATEGORY_LISTING,
    KNOWN_MOMENT,
    NS,
    PUBLIC,
    SITE_TITLE,
    VIETNAMESE,
    atom_entries,
    build,
    make_bulletin,
    newest_first,
    text_of,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "data" / "jsonfeed-1.1.schema.json"
VALIDATOR = jsonschema_rs.validator_for(json.loads(SCHEMA_PATH.read_text()), validate_formats=True)
TOP_LEVEL_KEYS = [
    "version", "title", "home_page_url", "feed_url", "description", "language", "hubs",
    "items",
]  # fmt: skip


@pytest.fixture
def settings() -> Settings:
    return Settings(public_url=PUBLIC, site_title=SITE_TITLE, timezone="Asia/Ho_Chi_Minh")


def feed_of(built: BuiltFeeds) -> dict[str, Any]:
    """The JSON Feed, parsed, after checking it against the JSON Feed 1.1 schema."""
    document: dict[str, Any] = json.loads(built.json.decode("utf-8"))  # UTF-8, or this raises
    errors = [error.message for error in VALIDATOR.iter_errors(document)]
    assert errors == []
    return document


# --- the schema itself: it must be able to say no ----------------------------------------------


def _minimal() -> dict[str, Any]:
    return {
        "version": JSON_FEED_VERSION,
        "title": "t",
        "items": [{"id": "1", "content_html": "<p>x</p>"}],
    }


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("title"), "title is required"),
        (lambda d: d.pop("items"), "items is required"),
        (lambda d: d.update(version="https://jsonfeed.org/version/1.0"), "the 1.1 version URL"),
        (lambda d: d["items"][0].pop("id"), "an item's id is required"),
        (lambda d: d["items"][0].update(id=1), "an id is a string"),
        (lambda d: d["items"][0].pop("content_html"), "content_html or content_text"),
        (lambda d: d["items"][0].update(date_published="09/03/2024"), "RFC 3339 dates"),
        (lambda d: d["items"][0].update(date_modified="2024-03-09 09:05"), "RFC 3339 dates"),
        (lambda d: d["items"][0].update(authors=[{}]), "an author has a member"),
        (lambda d: d["items"][0].update(tags="Giáo dục"), "tags are an array"),
        (lambda d: d["items"][0].update(date_publish="2024-03-09T09:05:06+07:00"), "misspelt"),
        (lambda d: d.update(hubs=[{"type": "WebSub"}]), "a hub has a url"),
        (lambda d: d.update(language="tiếng Việt"), "a language tag"),
    ],
)
def test_the_schema_refuses_what_the_spec_forbids(change: Any, why: str) -> None:
    document = _minimal()
    assert VALIDATOR.is_valid(document)
    change(document)
    assert not VALIDATOR.is_valid(document), why


def test_the_schema_takes_the_specs_optional_fields_and_extensions() -> None:
    document = _minimal() | {
        "home_page_url": "https://example.org/",
        "hubs": [{"type": "WebSub", "url": "https://example.org/hub"}],
        "expired": False,
        "_bantin": {"about": "https://example.org/ext"},
    }
    document["items"][0] |= {
        "content_text": "x",
        "date_published": "2010-02-07T14:04:00-05:00",
        "authors": [{"name": "A"}],
        "attachments": [{"url": "https://example.org/a.ogg", "mime_type": "audio/ogg"}],
    }
    assert VALIDATOR.is_valid(document)


# --- every feed validates -----------------------------------------------------------------------


@pytest.mark.parametrize("listing", [ALL, AGENCY_LISTING, CATEGORY_LISTING])
def test_every_feed_validates(settings: Settings, listing: Listing) -> None:
    bulletins = newest_first(4)
    bulletins[0].summary = None  # an excerpt instead
    bulletins[1].category = bulletins[1].category_slug = None
    bulletins[2].author = "Nguyễn Văn An"
    bulletins[3].language = "en"
    for rows in (bulletins, []):
        feed_of(build(settings, rows, listing))


@pytest.mark.parametrize(
    ("listing", "page", "path", "title", "description"),
    [
        (ALL, "/", "/feeds/all.json", SITE_TITLE, "Các bản tin mới nhất của mọi cơ quan"),
        (
            AGENCY_LISTING,
            "/ubnd-bac-kan/",
            "/feeds/agency/ubnd-bac-kan.json",
            f"UBND tỉnh Bắc Kạn – {SITE_TITLE}",
            "Các bản tin mới nhất của UBND tỉnh Bắc Kạn",
        ),
        (
            CATEGORY_LISTING,
            "/chuyen-muc/giao-duc/",
            "/feeds/category/giao-duc.json",
            f"Giáo dục – {SITE_TITLE}",
            "Các bản tin mới nhất thuộc chuyên mục Giáo dục",
        ),
    ],
)
def test_top_level_fields(
    settings: Settings, listing: Listing, page: str, path: str, title: str, description: str
) -> None:
    built = build(settings, [make_bulletin()], listing)
    feed = feed_of(built)
    assert list(feed) == TOP_LEVEL_KEYS  # `version` first, as the spec asks
    # WebSub discovery: ingest's hub (no BANTIN_INGEST_PUBLIC_URL here: its local address).
    assert feed["hubs"] == [{"type": "WebSub", "url": settings.resolved_ingest_url + "/hub"}]
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert (feed["title"], feed["description"]) == (title, description)
    assert feed["home_page_url"] == PUBLIC + page
    assert feed["feed_url"] == PUBLIC + path
    assert listing.feed_path("json") == path
    assert feed["language"] == "vi"
    # The same names as the Atom feed gives.
    atom = etree.fromstring(built.atom)
    assert text_of(atom, "atom:title") == title
    assert text_of(atom, "atom:subtitle") == description


# --- the Atom feed's items, ids and dates -------------------------------------------------------


def test_same_items_ids_dates_and_text_as_the_atom_feed(settings: Settings) -> None:
    bulletins = newest_first(5)
    bulletins[1].updated_at = KNOWN_MOMENT + timedelta(days=3, minutes=7)  # a correction
    bulletins[2].summary = None
    bulletins[3].author = "Nguyễn Văn An"
    bulletins[4].category = bulletins[4].category_slug = None
    built = build(settings, bulletins)
    items = feed_of(built)["items"]

    entries = atom_entries(built)
    assert [item["id"] for item in items] == [text_of(e, "atom:id") for e in entries]
    assert [item["id"] for item in items] == [b.guid for b in bulletins]
    for item, entry in zip(items, entries, strict=True):
        link = entry.find("atom:link", NS)
        assert link is not None and item["url"] == link.get("href")
        assert item["date_published"] == text_of(entry, "atom:published")
        assert item["date_modified"] == text_of(entry, "atom:updated")
        assert item["title"] == text_of(entry, "atom:title")
        assert item["summary"] == text_of(entry, "atom:summary")
        assert item["content_html"] == text_of(entry, "atom:content")
        assert item["authors"] == [{"name": text_of(entry, "atom:author/atom:name")}]
        labels = [c.get("label") for c in entry.findall("atom:category", NS)]
        assert item.get("tags", []) == labels
        assert item["language"] == "vi"
    assert items[1]["date_modified"] == "2024-03-12T09:12:06+07:00"
    assert items[1]["date_published"] == "2024-03-09T13:05:06+07:00"
    assert items[3]["authors"] == [{"name": "Nguyễn Văn An"}]
    assert items[0]["tags"] == ["Giáo dục"] and "tags" not in items[4]


def test_dates_are_rfc3339_in_the_sites_zone(settings: Settings) -> None:
    # 20:30 UTC on New Year's Eve is already the next day, and year, in Vietnam.
    moment = datetime(2024, 12, 31, 20, 30, 15, 999_999, tzinfo=UTC)
    (item,) = feed_of(build(settings, [make_bulletin(published_at=moment)]))["items"]
    assert item["date_published"] == "2025-01-01T03:30:15+07:00"  # whole seconds, as Atom
    assert datetime.fromisoformat(item["date_published"]) == moment.replace(microsecond=0)


def test_item_language_is_the_bulletins(settings: Settings) -> None:
    items = feed_of(build(settings, [make_bulletin(2, language="en"), make_bulletin(1)]))["items"]
    assert [item["language"] for item in items] == ["en", "vi"]


def test_empty_listing_gives_a_valid_empty_feed(settings: Settings) -> None:
    feed = feed_of(build(settings, [], ALL))
    assert feed["items"] == []
    assert build(settings, [], ALL).json == build(settings, [], ALL).json


# --- text: Vietnamese, hostile ------------------------------------------------------------------


def test_vietnamese_text_is_raw_nfc_utf8(settings: Settings) -> None:
    built = build(settings, [make_bulletin(title=VIETNAMESE, summary=VIETNAMESE)])
    assert VIETNAMESE.encode() in built.json  # raw UTF-8, no \u escapes
    assert b"\\u" not in built.json
    (item,) = feed_of(built)["items"]
    assert item["title"] == item["summary"] == VIETNAMESE
    assert unicodedata.is_normalized("NFC", built.json.decode())


def test_hostile_text_stays_text(settings: Settings) -> None:
    hostile = "</script><script>alert('x')</script> Tôm & Cá \"ngon\" <b>\u2028"
    body = sanitize_html(
        '<p onclick="steal()">Chào <a href="javascript:alert(1)">bạn</a></p><script>x</script>',
        base_url=PUBLIC,
    )
    bulletin = make_bulletin(title=hostile, summary=hostile, author=hostile, body_html=body)
    bulletin.category = hostile
    built = build(settings, [bulletin])
    (item,) = feed_of(built)["items"]
    # Plain strings, exactly as given: no escaping a reader would have to undo.
    assert item["title"] == item["summary"] == hostile
    assert item["authors"] == [{"name": hostile}] and item["tags"] == [hostile]
    # The only HTML is content_html: the sanitised body, as stored.
    assert item["content_html"] == body
    assert "script" not in body and "onclick" not in body and "javascript" not in body
    # Nothing hostile can end the JSON early: it stays one valid document.
    assert json.loads(built.json)["items"][0]["title"] == hostile


def test_characters_xml_forbids_are_dropped_as_in_the_other_feeds(settings: Settings) -> None:
    bulletins = [
        make_bulletin(2, title="Thông\x00 báo\x1b khẩn\ufffe", body_html="<p>Nội\x0b dung</p>"),
        make_bulletin(1, summary="Lỗi \ud800 mã hóa"),
    ]
    built = build(settings, bulletins)
    items = feed_of(built)["items"]
    assert [item["title"] for item in items] == ["Thông báo khẩn", "Kế hoạch số 1"]
    assert items[0]["content_html"] == "<p>Nội dung</p>"
    assert items[1]["summary"] == "Lỗi  mã hóa"
    assert [item["title"] for item in items] == [
        text_of(e, "atom:title") for e in atom_entries(built)
    ]


# Surrogates and controls included; never empty once cleaned: ingest refuses a blank title,
# and so does feedgen.
@hypothesis_settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(st.characters(exclude_categories=()), min_size=1, max_size=40).filter(clean_text)
)
def test_any_text_gives_a_valid_feed_with_the_atom_text(settings: Settings, text: str) -> None:
    built = build(settings, [make_bulletin(title=text, summary=text, author=text)])
    (item,) = feed_of(built)["items"]
    assert item["title"] == text_of(atom_entries(built)[0], "atom:title")
    assert item["title"] in (text, clean_text(text))  # as given, or cleaned like every feed


# --- determinism -------------------------------------------------------------------------------


# test_feeds.py's determinism test freezes feedgen's clock and compares all three formats.


def test_a_correction_changes_only_what_it_corrects(settings: Settings) -> None:
    before = feed_of(build(settings, [make_bulletin(title="Kế hoạch số 7")]))["items"][0]
    corrected = make_bulletin(
        title="Kế hoạch số 7 (đính chính)", updated_at=KNOWN_MOMENT + timedelta(hours=3)
    )
    after = feed_of(build(settings, [corrected]))["items"][0]
    changed = {key for key in before | after if before.get(key) != after.get(key)}
    assert changed == {"title", "date_modified"}
    assert after["id"] == before["id"]


# --- the feed job: the same rows in all three files; withdrawn bulletins gone -------------------


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    settings = Settings(
        data_dir=tmp_path,
        redis_url="memory://",
        public_url=PUBLIC,
        site_title=SITE_TITLE,
        timezone="Asia/Ho_Chi_Minh",
    )
    create_schema(settings)
    with session_scope(settings) as session:
        session.add(Agency(id=1, slug="ubnd-bac-kan", name="UBND tỉnh Bắc Kạn"))
    # write_feeds uses the settings and the storage only.
    return Runtime(settings, LocalStorage(settings.resolved_site_dir), None, None)  # type: ignore[arg-type]


def _publish(runtime: Runtime, count: int) -> list[str]:
    guids = []
    with session_scope(runtime.settings) as session:
        for i in range(count):
            moment = KNOWN_MOMENT + timedelta(hours=i)
            bulletin = Bulletin(
                guid=f"urn:uuid:4fbfac1c-975a-4018-8000-{i:012d}",
                agency_id=1, slug=f"ke-hoach-{i}", title=f"Kế hoạch {i}", summary=None,
                body_format="html", body_source="", body_html=f"<p>Nội dung {i}</p>",
                category="Giáo dục", category_slug="giao-duc",
                status=BulletinStatus.PUBLISHED, published_at=moment, updated_at=moment,
            )  # fmt: skip
            session.add(bulletin)
            guids.append(bulletin.guid)
    return guids[::-1]  # newest first


def _written(runtime: Runtime, listing: Listing) -> dict[str, bytes]:
    root = runtime.settings.resolved_site_dir
    return {fmt: (root / file_for(listing.feed_path(fmt))).read_bytes() for fmt in FEED_FORMATS}


@pytest.mark.parametrize(
    "listing", [ALL, AGENCY_LISTING, Listing(ListingKind.CATEGORY, "giao-duc")]
)
def test_the_feed_job_writes_the_json_feed_beside_rss_and_atom(
    runtime: Runtime, listing: Listing
) -> None:
    guids = _publish(runtime, 4)
    write_feeds(runtime, listing)
    files = _written(runtime, listing)
    feed = feed_of(BuiltFeeds(**files))
    assert [item["id"] for item in feed["items"]] == guids
    atom_ids = [text_of(e, "atom:id") for e in atom_entries(BuiltFeeds(**files))]
    assert atom_ids == guids

    # Withdrawn: gone from the JSON Feed exactly as from RSS and Atom.
    with session_scope(runtime.settings) as session:
        session.execute(
            update(Bulletin)
            .where(Bulletin.guid == guids[1])
            .values(status=BulletinStatus.WITHDRAWN)
        )
    write_feeds(runtime, listing)
    files = _written(runtime, listing)
    remaining = [guids[0], *guids[2:]]
    assert [item["id"] for item in feed_of(BuiltFeeds(**files))["items"]] == remaining
    assert [text_of(e, "atom:id") for e in atom_entries(BuiltFeeds(**files))] == remaining
    for fmt in FEED_FORMATS:
        assert guids[1].encode() not in files[fmt], fmt

    # A rebuild with nothing changed writes the same bytes (the gateway's ETag stays).
    write_feeds(runtime, listing)
    assert _written(runtime, listing) == files
