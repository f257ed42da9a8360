"""RSS and Atom feeds: what feed readers and the gateway's ETags depend on."""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import feedgen.entry
import feedgen.feed
import feedparser
import pytest
from lxml import etree

from services.feed.feeds import EXCERPT_CHARS, BuiltFeeds, build_feeds
from shared.models import Agency, Bulletin
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind

PUBLIC = "https://bantin.example.gov.vn"
INGEST = "https://api.bantin.example.gov.vn"
HUB = INGEST + "/hub"  # the WebSub hub lives on ingest
SITE_TITLE = "Bản tin"
NS = {
    "atom": "http://www.w3.org/2005/Atom",
    "content": "http://purl.org/rss/1.0/modules/content/",
    "dc": "http://purl.org/dc/elements/1.1/",
}
AGENCY_LISTING = Listing(ListingKind.AGENCY, "ubnd-bac-kan")
CATEGORY_LISTING = Listing(ListingKind.CATEGORY, "giao-duc")
# 2024-03-09 02:05:06 UTC is 09:05:06 on a Saturday in Vietnam.
KNOWN_MOMENT = datetime(2024, 3, 9, 2, 5, 6, 123456, tzinfo=UTC)
VIETNAMESE = "Ủy ban nhân dân tỉnh Bắc Kạn ban hành Kế hoạch số 628/QĐ-TTg về giáo dục"
BODY = (
    "<p>Theo đó, Kế hoạch đề ra <strong>6 nhiệm vụ</strong>, giải pháp chủ yếu.</p>\n"
    '<p>Xem <a href="https://bantin.example.gov.vn/ubnd-bac-kan/">trang cơ quan</a> '
    "&amp; văn bản gốc.</p>"
)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        public_url=PUBLIC,
        ingest_public_url=INGEST,
        site_title=SITE_TITLE,
        timezone="Asia/Ho_Chi_Minh",
    )


def make_agency() -> Agency:
    return Agency(id=1, slug="ubnd-bac-kan", name="UBND tỉnh Bắc Kạn")


def make_bulletin(bulletin_id: int = 7, **overrides: Any) -> Bulletin:
    published_at = overrides.pop("published_at", KNOWN_MOMENT)
    fields: dict[str, Any] = {
        "id": bulletin_id,
        "guid": f"urn:uuid:4fbfac1c-975a-4018-8000-{bulletin_id:012d}",
        "agency_id": 1,
        "slug": f"ke-hoach-{bulletin_id}",
        "title": f"Kế hoạch số {bulletin_id}",
        "summary": f"Tóm tắt kế hoạch số {bulletin_id}.",
        "body_format": "html",
        "body_source": "",
        "body_html": BODY,
        "author": None,
        "category": "Giáo dục",
        "category_slug": "giao-duc",
        "language": "vi",
        "published_at": published_at,
        "updated_at": published_at,
    }
    fields.update(overrides)
    agency = fields.pop("agency", None) or make_agency()
    bulletin = Bulletin(**fields)
    bulletin.agency = agency
    return bulletin


def newest_first(count: int) -> list[Bulletin]:
    """`count` bulletins an hour apart, newest first, as the listing query returns them."""
    return [
        make_bulletin(i, published_at=KNOWN_MOMENT + timedelta(hours=i))
        for i in range(count, 0, -1)
    ]


def build(
    settings: Settings, bulletins: Sequence[Bulletin], listing: Listing = AGENCY_LISTING
) -> BuiltFeeds:
    title = {ListingKind.ALL: SITE_TITLE, ListingKind.AGENCY: "UBND tỉnh Bắc Kạn"}.get(
        listing.kind, "Giáo dục"
    )
    return build_feeds(listing, title, bulletins, settings)


def parsed(document: bytes) -> Any:
    """feedparser's view, which must be free of any well-formedness complaint."""
    result = feedparser.parse(document)
    assert result.bozo == 0, result.get("bozo_exception")
    return result


def rss_items(feeds: BuiltFeeds) -> list[etree._Element]:
    return list(etree.fromstring(feeds.rss).iterfind("channel/item"))


def atom_entries(feeds: BuiltFeeds) -> list[etree._Element]:
    return list(etree.fromstring(feeds.atom).iterfind("atom:entry", NS))


def text_of(element: etree._Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None, path
    return found.text or ""


# --- items: count, order, ids ---------------------------------------------------------------


def test_items_keep_the_given_newest_first_order(settings: Settings) -> None:
    bulletins = newest_first(5)
    feeds = build(settings, bulletins)
    expected = [b.guid for b in bulletins]

    assert [text_of(item, "guid") for item in rss_items(feeds)] == expected
    assert [text_of(entry, "atom:id") for entry in atom_entries(feeds)] == expected
    assert [e.id for e in parsed(feeds.rss).entries] == expected
    assert [e.id for e in parsed(feeds.atom).entries] == expected


def test_guid_is_the_opaque_bulletin_guid(settings: Settings) -> None:
    bulletin = make_bulletin()
    feeds = build(settings, [bulletin])

    (item,) = rss_items(feeds)
    guid = item.find("guid")
    assert guid is not None
    assert guid.text == bulletin.guid
    assert guid.get("isPermaLink") == "false"
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:id") == bulletin.guid
    assert parsed(feeds.rss).entries[0].guidislink is False


def test_item_links_are_absolute_article_urls(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(7)])
    url = f"{PUBLIC}/ubnd-bac-kan/ke-hoach-7-7.html"

    (item,) = rss_items(feeds)
    assert text_of(item, "link") == url
    (entry,) = atom_entries(feeds)
    links = entry.findall("atom:link", NS)
    # No rel means rel="alternate" in Atom (feedgen 1.0 drops the attribute on entries).
    assert [(link.get("href"), link.get("rel", "alternate")) for link in links] == [
        (url, "alternate")
    ]
    assert parsed(feeds.atom).entries[0].link == url


# --- dates ------------------------------------------------------------------------------------


def test_rss_pub_date_is_rfc822_in_vietnam_time(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(published_at=KNOWN_MOMENT)])

    (item,) = rss_items(feeds)
    assert text_of(item, "pubDate") == "Sat, 09 Mar 2024 09:05:06 +0700"
    assert parsed(feeds.rss).entries[0].published_parsed[:6] == (2024, 3, 9, 2, 5, 6)


def test_dates_are_converted_not_relabelled(settings: Settings) -> None:
    # 20:30 UTC on New Year's Eve is already the next day, and year, in Vietnam.
    moment = datetime(2024, 12, 31, 20, 30, tzinfo=UTC)
    feeds = build(settings, [make_bulletin(published_at=moment)])

    (item,) = rss_items(feeds)
    assert text_of(item, "pubDate") == "Wed, 01 Jan 2025 03:30:00 +0700"
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:published") == "2025-01-01T03:30:00+07:00"


def test_atom_published_and_updated_are_rfc3339_in_vietnam_time(settings: Settings) -> None:
    corrected = KNOWN_MOMENT + timedelta(days=1, minutes=30)
    feeds = build(settings, [make_bulletin(updated_at=corrected)])

    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:published") == "2024-03-09T09:05:06+07:00"
    assert text_of(entry, "atom:updated") == "2024-03-10T09:35:06+07:00"
    atom = parsed(feeds.atom)
    assert atom.entries[0].updated_parsed[:6] == (2024, 3, 10, 2, 35, 6)


def test_feed_updated_is_the_latest_change_among_the_items(settings: Settings) -> None:
    bulletins = newest_first(3)
    # An older item's correction is the feed's latest change.
    bulletins[2].updated_at = KNOWN_MOMENT + timedelta(days=2)
    feeds = build(settings, bulletins)

    channel = etree.fromstring(feeds.rss).find("channel")
    assert channel is not None
    assert text_of(channel, "lastBuildDate") == "Mon, 11 Mar 2024 09:05:06 +0700"
    atom = etree.fromstring(feeds.atom)
    assert text_of(atom, "atom:updated") == "2024-03-11T09:05:06+07:00"


def test_naive_datetime_is_refused(settings: Settings) -> None:
    # It would otherwise be read as the server's local time, silently.
    with pytest.raises(ValueError, match="naive"):
        build(settings, [make_bulletin(published_at=datetime(2024, 3, 9, 9, 5))])


# --- channel and self links --------------------------------------------------------------


@pytest.mark.parametrize(
    ("listing", "page", "rss", "atom"),
    [
        (ALL, "/", "/feeds/all.rss", "/feeds/all.atom"),
        (
            AGENCY_LISTING,
            "/ubnd-bac-kan/",
            "/feeds/agency/ubnd-bac-kan.rss",
            "/feeds/agency/ubnd-bac-kan.atom",
        ),
        (
            CATEGORY_LISTING,
            "/chuyen-muc/giao-duc/",
            "/feeds/category/giao-duc.rss",
            "/feeds/category/giao-duc.atom",
        ),
    ],
)
def test_self_and_page_links_are_absolute(
    settings: Settings, listing: Listing, page: str, rss: str, atom: str
) -> None:
    for bulletins in ([make_bulletin()], []):
        feeds = build(settings, bulletins, listing)

        channel = etree.fromstring(feeds.rss).find("channel")
        assert channel is not None
        assert text_of(channel, "link") == PUBLIC + page
        self_links = channel.findall("atom:link[@rel='self']", NS)
        assert [link.get("href") for link in self_links] == [PUBLIC + rss]
        # WebSub discovery: the hub beside the self link, once.
        hub_links = channel.findall("atom:link[@rel='hub']", NS)
        assert [link.get("href") for link in hub_links] == [HUB]

        feed = etree.fromstring(feeds.atom)
        links = [(link.get("rel"), link.get("href")) for link in feed.findall("atom:link", NS)]
        assert sorted(links) == [
            ("alternate", PUBLIC + page),
            ("hub", HUB),
            ("self", PUBLIC + atom),
        ]
        assert text_of(feed, "atom:id") == PUBLIC + atom

        assert parsed(feeds.rss).feed.link == PUBLIC + page
        assert parsed(feeds.atom).feed.link == PUBLIC + page


def test_feed_titles_language_and_description(settings: Settings) -> None:
    home = build(settings, [make_bulletin()], ALL)
    agency = build(settings, [make_bulletin()], AGENCY_LISTING)
    category = build(settings, [make_bulletin()], CATEGORY_LISTING)

    assert parsed(home.rss).feed.title == SITE_TITLE
    assert parsed(agency.rss).feed.title == f"UBND tỉnh Bắc Kạn – {SITE_TITLE}"
    assert parsed(category.atom).feed.title == f"Giáo dục – {SITE_TITLE}"
    assert parsed(agency.rss).feed.description == "Các bản tin mới nhất của UBND tỉnh Bắc Kạn"
    channel = etree.fromstring(agency.rss).find("channel")
    assert channel is not None
    assert text_of(channel, "language") == "vi"
    assert etree.fromstring(agency.atom).get("{http://www.w3.org/XML/1998/namespace}lang") == "vi"


# --- item content ------------------------------------------------------------------------


def test_rss_full_content_is_cdata_html(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin()])

    assert b"<content:encoded><![CDATA[" + BODY.encode() + b"]]></content:encoded>" in feeds.rss
    (item,) = rss_items(feeds)
    assert text_of(item, "content:encoded") == BODY
    assert parsed(feeds.rss).entries[0].content[0].value == BODY


def test_atom_content_is_typed_html(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin()])

    (entry,) = atom_entries(feeds)
    content = entry.find("atom:content", NS)
    assert content is not None
    assert content.get("type") == "html"
    assert content.text == BODY
    assert parsed(feeds.atom).entries[0].content[0].type == "text/html"


def test_summary_is_the_description(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(7)])

    (item,) = rss_items(feeds)
    assert text_of(item, "description") == "Tóm tắt kế hoạch số 7."
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:summary") == "Tóm tắt kế hoạch số 7."


def test_missing_summary_becomes_a_plain_text_excerpt(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(summary=None)])

    expected = (
        "Theo đó, Kế hoạch đề ra 6 nhiệm vụ, giải pháp chủ yếu. Xem trang cơ quan & văn bản gốc."
    )
    (item,) = rss_items(feeds)
    assert text_of(item, "description") == html.escape(expected, quote=False)  # HTML source
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:summary") == expected


def test_excerpt_separates_blocks_but_not_inline_markup(settings: Settings) -> None:
    body = "<p>Một</p>hai<br>ba<ul><li>bốn</li></ul>năm <em>B</em>ắc<!-- ẩn --> Kạn &lt;6&gt;"
    feeds = build(settings, [make_bulletin(summary=None, body_html=body)])

    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:summary") == "Một hai ba bốn năm Bắc Kạn <6>"


def test_long_body_excerpt_is_cut_at_a_word(settings: Settings) -> None:
    body = "<p>" + "Ủy ban nhân dân tỉnh Bắc Kạn " * 40 + "</p>"
    feeds = build(settings, [make_bulletin(summary=None, body_html=body)])

    (entry,) = atom_entries(feeds)
    description = text_of(entry, "atom:summary")
    assert description.endswith("…")
    assert len(description) <= EXCERPT_CHARS
    words = description.removesuffix("…").split(" ")
    assert set(words) <= {"Ủy", "ban", "nhân", "dân", "tỉnh", "Bắc", "Kạn"}


def test_author_goes_to_dc_creator_and_atom_author(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(2, author="Nguyễn Văn An"), make_bulletin(1)])

    items = rss_items(feeds)
    assert [text_of(item, "dc:creator") for item in items] == [
        "Nguyễn Văn An",
        "UBND tỉnh Bắc Kạn",  # no author: the agency speaks
    ]
    # RSS <author> must be an e-mail address; a name there is invalid.
    assert all(item.find("author") is None for item in items)
    entries = atom_entries(feeds)
    assert [text_of(entry, "atom:author/atom:name") for entry in entries] == [
        "Nguyễn Văn An",
        "UBND tỉnh Bắc Kạn",
    ]
    assert [e.author for e in parsed(feeds.rss).entries] == ["Nguyễn Văn An", "UBND tỉnh Bắc Kạn"]
    # dc:creator is RSS only.
    assert b"dc:creator" not in feeds.atom


def test_category_when_present(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(2), make_bulletin(1, category=None, category_slug=None)])

    with_category, without = rss_items(feeds)
    assert text_of(with_category, "category") == "Giáo dục"
    assert without.find("category") is None
    with_term, without_term = atom_entries(feeds)
    category = with_term.find("atom:category", NS)
    assert category is not None
    assert (category.get("term"), category.get("label")) == ("giao-duc", "Giáo dục")
    assert without_term.find("atom:category", NS) is None


def test_vietnamese_text_round_trips_as_nfc_utf8(settings: Settings) -> None:
    feeds = build(settings, [make_bulletin(title=VIETNAMESE, summary=VIETNAMESE)])

    for document in (feeds.rss, feeds.atom):
        assert VIETNAMESE.encode() in document  # raw UTF-8, not character references
        entry = parsed(document).entries[0]
        assert entry.title == VIETNAMESE
        assert entry.summary == VIETNAMESE
        assert unicodedata.is_normalized("NFC", entry.title)


# --- corrections and determinism -----------------------------------------------------------


def test_correction_changes_updated_only(settings: Settings) -> None:
    original = make_bulletin(title="Kế hoạch số 7")
    corrected = make_bulletin(
        title="Kế hoạch số 7 (đính chính)", updated_at=KNOWN_MOMENT + timedelta(hours=3)
    )
    before = build(settings, [original])
    after = build(settings, [corrected])

    (old_entry,), (new_entry,) = atom_entries(before), atom_entries(after)
    assert text_of(new_entry, "atom:updated") == "2024-03-09T12:05:06+07:00"
    assert text_of(old_entry, "atom:updated") == "2024-03-09T09:05:06+07:00"
    for path in ("atom:id", "atom:published"):
        assert text_of(new_entry, path) == text_of(old_entry, path)
    (old_item,), (new_item,) = rss_items(before), rss_items(after)
    for path in ("guid", "pubDate", "link"):
        assert text_of(new_item, path) == text_of(old_item, path)
    assert text_of(new_item, "title") == "Kế hoạch số 7 (đính chính)"


def test_same_input_gives_the_same_bytes_whatever_the_clock(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(settings, newest_first(3))

    class AnyDatetime(type):
        # feedgen also uses the name for isinstance checks of the values it is given.
        def __instancecheck__(cls, instance: object) -> bool:
            return isinstance(instance, datetime)

    class OtherDay(datetime, metaclass=AnyDatetime):
        @classmethod
        def now(cls, tz: Any = None) -> OtherDay:  # type: ignore[override]
            return cls(1999, 1, 2, 3, 4, 5, tzinfo=UTC)

    # feedgen stamps "now" on every feed and entry it creates.
    monkeypatch.setattr(feedgen.feed, "datetime", OtherDay)
    monkeypatch.setattr(feedgen.entry, "datetime", OtherDay)
    second = build(settings, newest_first(3))

    assert second.rss == first.rss
    assert second.atom == first.atom
    assert second.json == first.json
    assert b"1999" not in second.rss + second.atom + second.json


def test_empty_listing_gives_valid_stable_feeds(settings: Settings) -> None:
    feeds = build(settings, [], ALL)

    assert parsed(feeds.rss).entries == []
    assert parsed(feeds.atom).entries == []
    assert rss_items(feeds) == [] and atom_entries(feeds) == []
    channel = etree.fromstring(feeds.rss).find("channel")
    assert channel is not None
    assert text_of(channel, "lastBuildDate").endswith("+0700")
    assert text_of(etree.fromstring(feeds.atom), "atom:updated").endswith("+07:00")
    assert build(settings, [], ALL) == feeds


# --- hostile content -----------------------------------------------------------------------


def test_markup_in_text_fields_stays_text(settings: Settings) -> None:
    title = "<script>alert('x')</script> Tôm & Cá \"ngon\" <b>"
    feeds = build(settings, [make_bulletin(title=title, summary=title, author="A & B <c>")])

    # RSS readers render titles and descriptions as HTML: they carry the text's HTML source.
    (item,) = rss_items(feeds)
    source = "&lt;script&gt;alert('x')&lt;/script&gt; Tôm &amp; Cá \"ngon\" &lt;b&gt;"
    assert text_of(item, "title") == source
    assert text_of(item, "description") == source
    assert text_of(item, "dc:creator") == "A & B <c>"  # plain text to every reader
    rss = parsed(feeds.rss).entries[0]
    assert (rss.title, rss.title_detail.type) == (source, "text/html")
    assert (rss.summary, rss.summary_detail.type) == (source, "text/html")
    # Atom says what its text is.
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:title") == title
    summary = entry.find("atom:summary", NS)
    assert summary is not None
    assert (summary.text, summary.get("type")) == (title, "text")
    atom = parsed(feeds.atom).entries[0]
    assert (atom.title, atom.title_detail.type) == (title, "text/plain")
    assert (atom.summary, atom.summary_detail.type) == (title, "text/plain")
    assert b"<script>" not in feeds.rss and b"<script>" not in feeds.atom


def test_cdata_terminator_in_body_keeps_the_feed_valid(settings: Settings) -> None:
    body = "<p>Mã nguồn: <code>a[b[0]]&gt;1</code> và ]]> ở giữa, rồi ]]]]> nữa.</p>"
    feeds = build(settings, [make_bulletin(body_html=body)])

    (item,) = rss_items(feeds)
    assert text_of(item, "content:encoded") == body
    (entry,) = atom_entries(feeds)
    assert text_of(entry, "atom:content") == body
    assert parsed(feeds.rss).entries[0].content[0].value == body
    assert parsed(feeds.atom).entries[0].content[0].value == body


def test_cdata_terminator_with_an_lxml_that_refuses_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lxml before 5.3 raised on "]]>" inside CDATA() instead of splitting the section.
    def old_cdata(data: str) -> etree.CDATA:
        if "]]>" in data:
            raise ValueError("']]>' not allowed inside CDATA")
        return etree.CDATA(data)

    monkeypatch.setattr(feedgen.entry, "CDATA", old_cdata)
    body = "<p>a ]]> b</p>"
    feeds = build(settings, [make_bulletin(2, body_html=body), make_bulletin(1)])

    first, second = rss_items(feeds)
    assert text_of(first, "content:encoded") == body
    assert text_of(second, "content:encoded") == BODY
    assert b"<![CDATA[" + BODY.encode() in feeds.rss  # other items keep their CDATA


def test_characters_xml_forbids_are_dropped_not_fatal(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Ingest strips these; a row that slipped past must not take the whole feed down.
    bulletins = [
        make_bulletin(2, title="Thông\x00 báo\x1b khẩn\ufffe", body_html="<p>Nội\x0b dung</p>"),
        make_bulletin(1, summary="Lỗi \ud800 mã hóa"),
    ]
    feeds = build(settings, bulletins)

    first, second = rss_items(feeds)
    assert text_of(first, "title") == "Thông báo khẩn"
    assert text_of(first, "content:encoded") == "<p>Nội dung</p>"
    assert text_of(second, "description") == "Lỗi  mã hóa"
    assert [e.title for e in parsed(feeds.atom).entries] == ["Thông báo khẩn", "Kế hoạch số 1"]
    parsed(feeds.rss)
    # Ingest should have caught it: say so, naming the feed.
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "feed agency:ubnd-bac-kan: removed characters XML does not allow"
    ]


def test_clean_data_builds_without_warnings(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    build(settings, newest_first(3))

    assert not [r for r in caplog.records if r.levelname == "WARNING"]


# A one-off measurement, not a test: .venv/bin/python -m tests.unit.feed.test_feeds
if __name__ == "__main__":
    import functools
    import timeit

    def _measure() -> None:
        body = "<p>" + "Ủy ban nhân dân tỉnh Bắc Kạn ban hành kế hoạch. " * 41 + "</p>"
        listing_settings = Settings(public_url=PUBLIC, site_title=SITE_TITLE)
        for with_summary in (True, False):
            bulletins = newest_first(50)
            for bulletin in bulletins:
                # Distinct bodies (~2 KiB of UTF-8), so the excerpt cache cannot share them.
                bulletin.body_html = f"<p>Mục {bulletin.id}.</p>{body}"
                if not with_summary:
                    bulletin.summary = None
            runs = min(
                timeit.repeat(
                    functools.partial(build, listing_settings, bulletins), number=200, repeat=5
                )
            )
            kind = "with summaries" if with_summary else "no summaries (excerpt cache warm)"
            print(f"build_feeds, 50 items, {kind}: {runs / 200 * 1000:.2f} ms")

    _measure()


# -- the entry cache (each entry is built once and reused by later builds) -----------------


def test_a_cached_build_gives_the_same_bytes_as_a_fresh_one(settings: Settings) -> None:
    import services.feed.feeds as feeds

    bulletins = newest_first(5)
    feeds._entry_cache.clear()
    fresh = build(settings, bulletins).by_format()
    cached = build(settings, bulletins).by_format()  # every entry from the cache now
    assert dict(cached) == dict(fresh)


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", "Tiêu đề đã sửa"), ("body_html", "<p>Nội dung đã sửa</p>"), ("summary", None)],
)
def test_a_changed_row_is_never_served_from_the_cache(
    settings: Settings, field: str, value: Any
) -> None:
    # Same id and revision (another database in the same process, a test's hand-made row):
    # the cache is keyed by what the entry shows, so the change still appears.
    before = build(settings, [make_bulletin(7)]).by_format()
    after = build(settings, [make_bulletin(7, **{field: value})]).by_format()
    for fmt in ("rss", "atom", "json"):
        assert after[fmt] != before[fmt]
    if value is not None:
        assert html.escape(value, quote=False).encode() in after["atom"]


def test_a_renamed_agency_shows_in_cached_entries(settings: Settings) -> None:
    build(settings, [make_bulletin(7)])
    renamed = Agency(id=1, slug="ubnd-bac-kan", name="UBND tỉnh Bắc Kạn (mới)")
    after = build(settings, [make_bulletin(7, agency=renamed)]).by_format()
    assert "UBND tỉnh Bắc Kạn (mới)".encode() in after["rss"]
