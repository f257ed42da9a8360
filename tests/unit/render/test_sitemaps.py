"""Sitemaps, the news sitemap, robots.txt and the feed directory: valid, exact, deterministic."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

import lxml.html
import pytest
from lxml import etree
from sqlalchemy import event
from sqlalchemy.orm import Session

from services.render import jobs, sitemaps
from services.render.pages import PageRenderer
from services.render.sitemaps import NewsUrl, Url
from shared import refresh
from shared.db import create_schema, engine_for, session_scope
from shared.models import Agency, Bulletin, BulletinStatus, Category
from shared.refresh import Job
from shared.runtime import Runtime
from shared.settings import Settings
from shared.site import RESERVED_SLUGS, Listing, ListingKind, month_key, sitemap, sitemap_path
from shared.storage import LocalStorage
from tests.conftest import fresh_postgresql

XSD_DIR = Path(__file__).resolve().parents[2] / "data" / "sitemaps"
NS = {"s": sitemaps.SITEMAP_NS, "n": sitemaps.NEWS_NS}
PUBLIC = "https://bantin.example.gov.vn"
HOSTILE = "</loc><script>alert(1)</script> & \"trích\" 'dẫn' <![CDATA[x]]>\x00\x0b\ufffe"


@cache
def schema(name: str) -> etree.XMLSchema:
    """An official schema from tests/data/sitemaps ("sitemap", "siteindex"); "news" is the
    sitemap schema with Google's news extension loaded beside it (its <url> admits elements
    of other namespaces only strictly validated)."""
    if name != "news":
        return etree.XMLSchema(etree.parse(str(XSD_DIR / f"{name}.xsd")))
    wrapper = f"""<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema">
      <xsd:import namespace="{sitemaps.SITEMAP_NS}"
                  schemaLocation="{(XSD_DIR / "sitemap.xsd").as_uri()}"/>
      <xsd:import namespace="{sitemaps.NEWS_NS}"
                  schemaLocation="{(XSD_DIR / "sitemap-news.xsd").as_uri()}"/>
    </xsd:schema>"""
    return etree.XMLSchema(etree.fromstring(wrapper.encode()))


def valid(name: str, body: bytes) -> etree._Element:
    """Parse `body`, assert it validates against schema `name`, return its root."""
    root = etree.fromstring(body)
    checker = schema(name)
    assert checker.validate(root), checker.error_log
    return root


def at(day: int, hour: int = 0, month: int = 7, second: int = 0) -> datetime:
    return datetime(2020, month, day, hour, 0, second, tzinfo=UTC)


# -- documents ----------------------------------------------------------------------------


def test_a_sitemap_lists_each_url_with_its_lastmod_and_validates() -> None:
    urls = [Url(f"{PUBLIC}/so-y-te/thong-bao-{i}.html", at(i + 1, 9)) for i in range(3)]
    root = valid("sitemap", sitemaps.urlset(urls))
    assert root.xpath("s:url/s:loc/text()", namespaces=NS) == [u.loc for u in urls]
    assert root.xpath("s:url/s:lastmod/text()", namespaces=NS) == [
        "2020-07-01T09:00:00+00:00", "2020-07-02T09:00:00+00:00", "2020-07-03T09:00:00+00:00"
    ]  # fmt: skip


def test_the_index_validates_and_a_hostile_loc_is_escaped_not_injected() -> None:
    hostile = f"{PUBLIC}/sitemaps/2020-07.xml?x=</loc><sitemap>&y"
    root = valid("siteindex", sitemaps.sitemap_index([Url(hostile, at(5))]))
    assert root.xpath("s:sitemap/s:loc/text()", namespaces=NS) == [hostile]
    assert len(root) == 1


def test_the_news_sitemap_validates_and_carries_publication_date_and_nfc_title() -> None:
    decomposed = unicodedata.normalize("NFD", "Ủy ban nhân dân tỉnh Bắc Kạn thông báo")
    urls = [
        NewsUrl(f"{PUBLIC}/a/b-1.html", at(30, 20), decomposed, "vi"),
        NewsUrl(f"{PUBLIC}/a/b-2.html", at(30, 21), HOSTILE, "zh-Hant"),
        NewsUrl(f"{PUBLIC}/a/b-3.html", at(30, 22), "English", "en-GB"),
    ]
    root = valid("news", sitemaps.news_urlset(urls, "Bản tin <Tỉnh>"))
    news = root.xpath("s:url/n:news", namespaces=NS)
    assert [n.findtext("n:publication/n:name", namespaces=NS) for n in news] == [
        "Bản tin <Tỉnh>"
    ] * 3
    assert [n.findtext("n:publication/n:language", namespaces=NS) for n in news] == [
        "vi", "zh-tw", "en"
    ]  # fmt: skip
    assert news[0].findtext("n:publication_date", namespaces=NS) == "2020-07-30T20:00:00+00:00"
    titles = [n.findtext("n:title", namespaces=NS) for n in news]
    assert titles[0] == unicodedata.normalize("NFC", decomposed) != decomposed
    # The hostile title survives as text, minus the characters XML cannot carry at all.
    assert titles[1] == HOSTILE.replace("\x00", "").replace("\x0b", "").replace("\ufffe", "")
    assert root.xpath("//script") == []


def test_there_is_no_valid_empty_news_sitemap_so_none_is_written() -> None:
    # sitemap.xsd: <url> has the default minOccurs, 1, so an empty urlset is refused ...
    empty = etree.fromstring(sitemaps.news_urlset([], "Bản tin"))
    for name in ("news", "sitemap"):
        checker = schema(name)
        assert not checker.validate(empty), name
        assert "Missing child element" in str(checker.error_log), name
    # ... and there is no empty news sitemap: no file at all (robots.txt then names none).
    assert sitemaps.news_sitemap([], "Bản tin") is None
    one = [NewsUrl(f"{PUBLIC}/a/b-1.html", at(30, 20), "Thông báo", "vi")]
    body = sitemaps.news_sitemap(one, "Bản tin")
    assert body is not None and body == sitemaps.news_urlset(one, "Bản tin")
    assert len(valid("news", body).xpath("s:url", namespaces=NS)) == 1


@pytest.mark.parametrize(
    ("given", "wanted"),
    [("vi", "vi"), ("VI-vn", "vi"), ("zh-CN", "zh-cn"), ("zh-Hans", "zh-cn"), ("fil", "fil"),
     ("x-klingon", "vi"), ("", "vi")],
)  # fmt: skip
def test_news_language_is_what_google_accepts(given: str, wanted: str) -> None:
    assert sitemaps.news_language(given) == wanted


def test_robots_txt_allows_everything_and_names_both_sitemaps() -> None:
    text = sitemaps.robots_txt(PUBLIC + "/").decode()
    assert text.splitlines() == [
        "User-agent: *", "Allow: /", "",
        f"Sitemap: {PUBLIC}/sitemap.xml", f"Sitemap: {PUBLIC}/sitemaps/news.xml",
    ]  # fmt: skip


def test_robots_txt_names_the_news_sitemap_only_while_it_exists() -> None:
    text = sitemaps.robots_txt(PUBLIC, with_news=False).decode()
    assert text.splitlines() == ["User-agent: *", "Allow: /", "", f"Sitemap: {PUBLIC}/sitemap.xml"]
    # Recent news before any month sitemap cannot happen (a news URL is in its month), but
    # robots.txt would then name the news sitemap alone.
    alone = sitemaps.robots_txt(PUBLIC, with_sitemaps=False, with_news=True).decode()
    assert alone.splitlines()[2:] == ["", f"Sitemap: {PUBLIC}/sitemaps/news.xml"]


def test_opml_is_outlines_of_type_rss_in_titled_folders() -> None:
    feed = sitemaps.FeedOutline("Sở Y tế & <Dân>", f"{PUBLIC}/so-y-te/", f"{PUBLIC}/f.rss")
    groups = [sitemaps.FeedGroup(None, [feed]), sitemaps.FeedGroup("Cơ quan", [feed]),
              sitemaps.FeedGroup("Trống", [])]  # fmt: skip
    root = etree.fromstring(sitemaps.opml("Bản tin", groups, "RSS2"))
    assert (root.tag, root.get("version"), root.findtext("head/title")) == (
        "opml", "2.0", "Bản tin"
    )  # fmt: skip
    top = root.findall("body/outline")
    assert [o.get("text") for o in top] == ["Sở Y tế & <Dân>", "Cơ quan"]  # empty folder left out
    for outline in [top[0], *top[1]]:
        assert outline.attrib == {
            "type": "rss", "version": "RSS2", "text": "Sở Y tế & <Dân>", "title": "Sở Y tế & <Dân>",
            "xmlUrl": f"{PUBLIC}/f.rss", "htmlUrl": f"{PUBLIC}/so-y-te/",
        }  # fmt: skip


# -- site layout --------------------------------------------------------------------------


def test_sitemap_targets_are_listings_with_their_own_files() -> None:
    assert sitemap("index").page_path == "/sitemap.xml"
    assert sitemap("news").page_path == "/sitemaps/news.xml"
    assert sitemap("2020-07").page_path == "/sitemaps/2020-07.xml"
    assert sitemap_path("2020-07", 3) == "/sitemaps/2020-07-3.xml"
    assert Listing.from_target("sitemap:2020-07") == sitemap("2020-07")
    for bad in ("sitemap:2020-13", "sitemap:../x", "sitemap:", "sitemap:2020-7"):
        with pytest.raises(ValueError):
            Listing.from_target(bad)
    with pytest.raises(ValueError):
        sitemap("index").feed_path("rss")
    # Months are UTC: 20:00 UTC on the 31st is already August in Hà Nội, but July here.
    assert month_key(at(31, 20)) == "2020-07"
    assert month_key(datetime(2020, 7, 31, 20)) == "2020-07"  # naive: UTC
    assert {"sitemap.xml", "sitemaps", "robots.txt", "feeds.opml"} <= RESERVED_SLUGS


# -- built from the database --------------------------------------------------------------


@dataclass
class FakeRefresher:
    """Records what a build asks for; `done` plays the fingerprints of earlier builds."""

    done: dict[str, str] = field(default_factory=dict)
    requested: list[tuple[Job, Listing]] = field(default_factory=list)

    def built(self, job: Job, listing: Listing) -> str | None:
        return self.done.get(listing.target)

    def request(self, job: Job, listing: Listing) -> bool:
        self.requested.append((job, listing))
        return True

    def request_many(self, wanted: list[tuple[Job, Listing]]) -> int:
        self.requested.extend(wanted)
        return len(wanted)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return seeded(Settings(public_url=PUBLIC, data_dir=tmp_path, site_title="Bản tin"))


def seeded(settings: Settings, hostile: str = HOSTILE) -> Settings:
    """A fresh schema with six bulletins: published, withdrawn, queued, in three months."""
    create_schema(settings)
    with session_scope(settings) as session:
        health = Agency(slug="so-y-te", name="Sở Y tế")
        edu = Agency(slug="so-gd", name="Sở Giáo dục & <Đào tạo>")
        session.add_all([health, edu, Category(slug="giao-duc", name="Giáo dục")])
        session.flush()
        rows = [
            # (agency, day, month, hour, status, title)
            (health, 1, 7, 0, BulletinStatus.PUBLISHED, "Tháng bảy, đầu"),
            (edu, 31, 7, 23, BulletinStatus.PUBLISHED, "Tháng bảy, cuối"),  # 06:00 on 1/8 in VN
            (health, 15, 7, 0, BulletinStatus.WITHDRAWN, "Đã gỡ"),
            (health, 20, 7, 0, BulletinStatus.QUEUED, "Chưa đăng"),
            (edu, 1, 8, 0, BulletinStatus.PUBLISHED, hostile),
            (health, 3, 11, 0, BulletinStatus.PUBLISHED, "Tháng mười một"),  # months skipped
        ]
        for i, (agency, day, month, hour, status, title) in enumerate(rows, start=1):
            session.add(
                Bulletin(
                    id=i, agency_id=agency.id, slug="ban-tin", title=title,
                    body_format="text", body_source="b", body_html="<p>b</p>",
                    published_at=at(day, hour, month),
                    updated_at=at(day, hour, month) + timedelta(minutes=i),
                    status=status, category="Giáo dục", category_slug="giao-duc",
                )
            )  # fmt: skip
    return settings


def runtime_for(settings: Settings, refresher: FakeRefresher) -> Runtime:
    return Runtime(
        settings=settings,
        storage=LocalStorage(settings.resolved_site_dir),
        redis=cast(Any, None),
        refresher=cast(Any, refresher),
    )


def test_months_split_by_utc_and_leave_out_withdrawn_and_unpublished(settings: Settings) -> None:
    with Session(engine_for(settings)) as session:
        july, july_summary = sitemaps.month_rows(session, PUBLIC, "2020-07")
        august, _ = sitemaps.month_rows(session, PUBLIC, "2020-08")
        september, _ = sitemaps.month_rows(session, PUBLIC, "2020-09")
        summaries = sitemaps.month_summaries(session)
    assert [u.loc for u in july] == [
        f"{PUBLIC}/so-y-te/ban-tin-1.html", f"{PUBLIC}/so-gd/ban-tin-2.html"
    ]  # fmt: skip
    assert [u.lastmod for u in july] == [
        at(1, 0) + timedelta(minutes=1),
        at(31, 23) + timedelta(minutes=2),
    ]
    assert [u.loc for u in august] == [f"{PUBLIC}/so-gd/ban-tin-5.html"]
    assert september == []
    assert [s.key for s in summaries] == ["2020-07", "2020-08", "2020-11"]
    # The index's aggregates and the month's own rows agree: that is how it spots stale months.
    assert summaries[0] == july_summary
    assert summaries[0].fingerprint == f"2:3:{sitemaps.w3c(at(31, 23) + timedelta(minutes=2))}"


def test_summaries_and_month_rows_agree_on_postgresql(tmp_path: Path) -> None:
    # If the index's aggregates and a month's rows disagreed (types, precision), every index
    # build would rebuild every month: PostgreSQL is what production runs.
    with fresh_postgresql("bantin_sitemaps") as url:
        settings = Settings(public_url=PUBLIC, data_dir=tmp_path, database_url=url)
        seeded(settings, HOSTILE.replace("\x00", ""))  # PostgreSQL text refuses NUL
        try:
            with Session(engine_for(settings)) as session:
                summaries = sitemaps.month_summaries(session)
                rows = [sitemaps.month_rows(session, PUBLIC, s.key)[1] for s in summaries]
        finally:
            engine_for(settings).dispose()
    assert [s.key for s in summaries] == ["2020-07", "2020-08", "2020-11"]
    assert summaries == rows


def test_news_keeps_exactly_the_last_two_days(settings: Settings) -> None:
    with Session(engine_for(settings)) as session:
        edge = at(3, 0, month=11) + sitemaps.NEWS_WINDOW
        inside = sitemaps.news_rows(session, PUBLIC, edge)
        outside = sitemaps.news_rows(session, PUBLIC, edge + timedelta(seconds=1))
        august = sitemaps.news_rows(session, PUBLIC, at(2, 0, month=8))
    assert [row[0] for row in inside] == [6]  # published exactly two days before
    assert outside == []
    # Newest first; withdrawn (3) and queued (4) never.
    assert [row[0] for row in august] == [6, 5, 2]


def test_with_no_news_in_two_days_there_is_no_news_sitemap_and_robots_txt_names_none(
    settings: Settings,
) -> None:
    renderer = PageRenderer(settings)
    refresher = FakeRefresher()
    runtime = runtime_for(settings, refresher)
    news = settings.resolved_site_dir / "sitemaps" / "news.xml"
    robots = settings.resolved_site_dir / "robots.txt"
    for key in ("2020-07", "2020-08", "2020-11"):
        refresher.done[f"sitemap:{key}"] = jobs.build_sitemap(runtime, renderer, sitemap(key))
    refresher.done["sitemap:news"] = jobs.build_sitemap(
        runtime, renderer, sitemap("news"), at(2, 0, 8)
    )
    jobs.build_sitemap(runtime, renderer, sitemap("index"))
    valid("news", news.read_bytes())
    assert f"Sitemap: {PUBLIC}/sitemaps/news.xml" in robots.read_text().splitlines()

    # December: nothing published in the last two days. The file goes (an empty urlset is
    # invalid), and the index build, asked for, takes it out of robots.txt ...
    refresher.requested.clear()
    refresher.done["sitemap:news"] = jobs.build_sitemap(
        runtime, renderer, sitemap("news"), at(1, 0, 12)
    )
    assert not news.exists()
    assert refresher.requested == [(Job.PAGE, sitemap("index"))]
    refresher.requested.clear()
    jobs.build_sitemap(runtime, renderer, sitemap("index"))
    assert robots.read_text().splitlines()[2:] == ["", f"Sitemap: {PUBLIC}/sitemap.xml"]
    # ... which does not take the missing file for a lost one: no rebuild of the news.
    assert refresher.requested == []


def test_the_index_build_writes_the_site_maps_and_asks_for_stale_months(
    settings: Settings,
) -> None:
    renderer = PageRenderer(settings)
    refresher = FakeRefresher()
    runtime = runtime_for(settings, refresher)
    site = settings.resolved_site_dir
    # The months first, as the publish path asks for them; their fingerprints recorded.
    for key in ("2020-07", "2020-08", "2020-11"):
        refresher.done[f"sitemap:{key}"] = jobs.build_sitemap(runtime, renderer, sitemap(key))
    refresher.done["sitemap:news"] = jobs.build_sitemap(
        runtime, renderer, sitemap("news"), at(2, 0, 8)
    )
    # The news sitemap appeared: the index build is asked for, so robots.txt names it.
    assert refresher.requested == [(Job.PAGE, sitemap("index"))]
    refresher.requested.clear()
    first = jobs.build_sitemap(runtime, renderer, sitemap("index"))
    assert refresher.requested == []  # everything current: nothing to rebuild

    index = valid("siteindex", (site / "sitemap.xml").read_bytes())
    assert index.xpath("s:sitemap/s:loc/text()", namespaces=NS) == [
        f"{PUBLIC}/sitemaps/2020-07.xml", f"{PUBLIC}/sitemaps/2020-08.xml",
        f"{PUBLIC}/sitemaps/2020-11.xml",
    ]  # fmt: skip
    assert index.xpath("s:sitemap/s:lastmod/text()", namespaces=NS)[0] == sitemaps.w3c(
        at(31, 23) + timedelta(minutes=2)
    )
    for key in ("2020-07", "2020-08", "2020-11"):
        valid("sitemap", (site / "sitemaps" / f"{key}.xml").read_bytes())
    news = valid("news", (site / "sitemaps" / "news.xml").read_bytes())
    assert news.xpath("s:url/s:loc/text()", namespaces=NS) == [
        f"{PUBLIC}/so-y-te/ban-tin-6.html", f"{PUBLIC}/so-gd/ban-tin-5.html",
        f"{PUBLIC}/so-gd/ban-tin-2.html",
    ]  # fmt: skip
    assert (site / "robots.txt").read_bytes() == sitemaps.robots_txt(PUBLIC)

    # Deterministic: the same rows give the same bytes (and so the same ETag).
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert jobs.build_sitemap(runtime, renderer, sitemap("index")) == first
    for key in ("2020-07", "news"):
        jobs.build_sitemap(runtime, renderer, sitemap(key), at(2, 0, 8))
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before

    # A withdrawal: its month loses the URL; a month left empty loses its file and its entry.
    with session_scope(settings) as session:
        for bulletin_id in (1, 5):
            session.get_one(Bulletin, bulletin_id).status = BulletinStatus.WITHDRAWN
    assert jobs.build_sitemap(runtime, renderer, sitemap("index")) != first
    assert refresher.requested == [(Job.PAGE, sitemap("2020-07"))]  # August is no more
    jobs.build_sitemap(runtime, renderer, sitemap("2020-07"))
    jobs.build_sitemap(runtime, renderer, sitemap("2020-08"))
    july = valid("sitemap", (site / "sitemaps" / "2020-07.xml").read_bytes())
    assert july.xpath("s:url/s:loc/text()", namespaces=NS) == [f"{PUBLIC}/so-gd/ban-tin-2.html"]
    assert not (site / "sitemaps" / "2020-08.xml").exists()
    index = valid("siteindex", (site / "sitemap.xml").read_bytes())
    assert len(index) == 2


def built_all(settings: Settings, refresher: FakeRefresher, runtime: Runtime) -> None:
    """Build every sitemap, recording fingerprints as Refresher.run would."""
    renderer = PageRenderer(settings)
    for key in ("2020-07", "2020-08", "2020-09", "2020-11", "news"):
        refresher.done[f"sitemap:{key}"] = jobs.build_sitemap(
            runtime, renderer, sitemap(key), at(2, 0, 8)
        )
    refresher.requested.clear()  # the news sitemap's first file asks for the index: built here
    jobs.build_sitemap(runtime, renderer, sitemap("index"))


def test_a_correction_moving_a_bulletin_to_another_month_is_caught_by_the_index(
    settings: Settings,
) -> None:
    refresher = FakeRefresher()
    runtime = runtime_for(settings, refresher)
    built_all(settings, refresher, runtime)
    assert refresher.requested == []
    # The publish path asks for the new month only; the old one still lists the URL.
    with session_scope(settings) as session:
        session.get_one(Bulletin, 1).published_at = at(9, 0, month=9)
    jobs.build_sitemap(runtime, PageRenderer(settings), sitemap("index"))
    assert refresher.requested == [(Job.PAGE, sitemap("2020-07")), (Job.PAGE, sitemap("2020-09"))]


def test_a_missing_sitemap_file_is_rebuilt_by_the_index(settings: Settings) -> None:
    refresher = FakeRefresher()
    runtime = runtime_for(settings, refresher)
    built_all(settings, refresher, runtime)
    (settings.resolved_site_dir / "sitemaps" / "2020-08.xml").unlink()
    (settings.resolved_site_dir / "sitemaps" / "news.xml").unlink()
    jobs.build_sitemap(runtime, PageRenderer(settings), sitemap("index"))
    assert refresher.requested == [(Job.PAGE, sitemap("2020-08")), (Job.PAGE, sitemap("news"))]


def test_a_month_past_the_url_limit_is_split_and_its_parts_follow_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sitemaps, "MAX_URLS", 1)  # July has two URLs: two parts
    refresher = FakeRefresher()
    runtime = runtime_for(settings, refresher)
    built_all(settings, refresher, runtime)
    site = settings.resolved_site_dir
    parts = [valid("sitemap", (site / "sitemaps" / name).read_bytes())
             for name in ("2020-07.xml", "2020-07-2.xml")]  # fmt: skip
    assert [p.xpath("s:url/s:loc/text()", namespaces=NS) for p in parts] == [
        [f"{PUBLIC}/so-y-te/ban-tin-1.html"], [f"{PUBLIC}/so-gd/ban-tin-2.html"]
    ]  # fmt: skip
    index = valid("siteindex", (site / "sitemap.xml").read_bytes())
    assert index.xpath("s:sitemap/s:loc/text()", namespaces=NS)[:3] == [
        f"{PUBLIC}/sitemaps/2020-07.xml", f"{PUBLIC}/sitemaps/2020-07-2.xml",
        f"{PUBLIC}/sitemaps/2020-08.xml",
    ]  # fmt: skip
    # Back under the limit: the second part goes.
    monkeypatch.setattr(sitemaps, "MAX_URLS", 50_000)
    jobs.build_sitemap(runtime, PageRenderer(settings), sitemap("2020-07"))
    assert not (site / "sitemaps" / "2020-07-2.xml").exists()
    assert len(etree.fromstring((site / "sitemaps" / "2020-07.xml").read_bytes())) == 2


def test_a_lost_month_build_is_found_by_the_index(settings: Settings) -> None:
    refresher = FakeRefresher()  # nothing built yet, or Redis lost what was
    jobs.build_sitemap(runtime_for(settings, refresher), PageRenderer(settings), sitemap("index"))
    assert refresher.requested == [
        (Job.PAGE, sitemap(key)) for key in ("2020-07", "2020-08", "2020-11", "news")
    ]


def test_opml_and_the_feed_page_list_every_feed(settings: Settings) -> None:
    renderer = PageRenderer(settings)
    jobs.build_sitemap(runtime_for(settings, FakeRefresher()), renderer, sitemap("index"))
    site = settings.resolved_site_dir
    expected = {
        "all": (f"{PUBLIC}/", "Bản tin – Tất cả bản tin"),
        "agency/so-gd": (f"{PUBLIC}/so-gd/", "Sở Giáo dục & <Đào tạo>"),
        "agency/so-y-te": (f"{PUBLIC}/so-y-te/", "Sở Y tế"),
        "category/giao-duc": (f"{PUBLIC}/chuyen-muc/giao-duc/", "Bản tin – Giáo dục"),
    }
    for fmt, path in (
        ("rss", "feeds.opml"),
        ("atom", "feeds/atom.opml"),
        ("json", "feeds/json.opml"),
    ):
        root = etree.fromstring((site / path).read_bytes())
        outlines = root.xpath("//outline[@xmlUrl]")
        assert {o.get("type") for o in outlines} == {"rss"}
        assert [o.get("xmlUrl") for o in outlines] == [
            f"{PUBLIC}/feeds/{name}.{fmt}" for name in expected
        ]
        assert [(o.get("htmlUrl"), o.get("text")) for o in outlines] == list(expected.values())
        assert [o.get("text") for o in root.xpath("body/outline[not(@xmlUrl)]")] == [
            "Cơ quan ban hành", "Chuyên mục"
        ]  # fmt: skip

    page = lxml.html.document_fromstring((site / "feeds" / "index.html").read_bytes())
    assert page.get("lang") == "vi"
    assert page.findtext(".//h1") == "Nguồn tin"
    hrefs = page.xpath("//main//a/@href")
    for name in expected:
        for fmt in ("rss", "atom", "json"):
            assert f"{PUBLIC}/feeds/{name}.{fmt}" in hrefs
    assert {"/feeds.opml", "/feeds/atom.opml", "/feeds/json.opml", "/so-gd/"} <= set(hrefs)
    assert "Sở Giáo dục & <Đào tạo>" in page.xpath("//main//a/text()")  # escaped, not markup
    assert page.xpath('//link[@rel="outline"]/@href')[0] == "/feeds.opml"


def test_every_page_links_the_feed_directory(settings: Settings) -> None:
    html = PageRenderer(settings).listing(Listing(ListingKind.ALL), "Bản tin", [])
    footer = lxml.html.document_fromstring(html).xpath("//footer//a[@href='/feeds/']")
    assert [a.text for a in footer] == ["Mọi nguồn tin, theo cơ quan và chuyên mục"]


def test_a_publish_asks_for_its_month_and_the_news_sitemap() -> None:
    assert jobs.sitemaps_of(at(31, 23)) == [sitemap("2020-07"), sitemap("news")]
    assert all(target.kind is ListingKind.SITEMAP for target in jobs.sitemaps_of(at(1)))


@pytest.mark.parametrize(
    ("listing", "asked"),
    [(Listing(ListingKind.ALL), True), (Listing(ListingKind.AGENCY, "so-y-te"), False)],
)
def test_the_home_page_build_asks_for_the_sitemap_index(
    settings: Settings, listing: Listing, asked: bool
) -> None:
    refresher = FakeRefresher()
    jobs.render_listing(runtime_for(settings, refresher), PageRenderer(settings), listing)
    assert refresher.requested == ([(Job.PAGE, sitemap("index"))] if asked else [])


@pytest.mark.parametrize("query", ["month", "summaries", "news"])
def test_sitemap_queries_walk_the_status_published_at_index(settings: Settings, query: str) -> None:
    engine = engine_for(settings)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            if query == "month":
                sitemaps.month_rows(session, PUBLIC, "2020-07")
            elif query == "summaries":
                sitemaps.month_summaries(session)
            else:
                sitemaps.news_rows(session, PUBLIC, at(2, 0, 8))
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        assert statements
        for statement, parameters in statements:
            plan = session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters
            )
            details = " | ".join(row[-1] for row in plan)
            # The (status, published_at, id) index, a range of it in its order (or its first
            # entry, for the MIN that finds the first month): never the whole table.
            assert "INDEX ix_bulletin_listing_all (status=?" in details, details
            if "min(" not in statement:
                assert "AND published_at>" in details, details
            assert "SCAN bulletins" not in details, details
            assert "TEMP B-TREE" not in details, details


def test_sitemaps_rebuild_less_often_than_pages_under_load() -> None:
    assert refresh.rebuild_interval(sitemap("index")) == refresh.SITEMAP_REBUILD_INTERVAL
    assert refresh.rebuild_interval(sitemap("2020-07")) == refresh.SITEMAP_REBUILD_INTERVAL
    assert refresh.rebuild_interval(Listing(ListingKind.ALL)) == refresh.MIN_REBUILD_INTERVAL
    # The builder keeps its lock across the wait: it must outlive it.
    assert refresh.SITEMAP_REBUILD_INTERVAL < refresh.LOCK_TTL_SECONDS


def test_a_site_with_nothing_published_names_no_sitemap() -> None:
    """An index must list at least one sitemap (the XSD says so): until the first publish
    there is none, and robots.txt must not point crawlers at a 404."""
    empty = sitemaps.robots_txt("https://bantin.example.vn", with_sitemaps=False).decode()
    assert empty == "User-agent: *\nAllow: /\n"
    full = sitemaps.robots_txt("https://bantin.example.vn").decode()
    assert "Sitemap: https://bantin.example.vn/sitemap.xml" in full
