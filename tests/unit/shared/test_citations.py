"""shared.citations: keys, names, dates, short references, NFD input and linking."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from pathlib import Path

import pytest

from shared import citations
from shared.citations import Document, extract, extract_bulletin, find_mentions

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "examples" / "000_4fbfac1c975a2018.txt"
KEY = re.compile(r"[a-z0-9-]{1,120}")


def href(doc: Document) -> str:
    return f"/van-ban/{doc.key}/"


def keys(text: str) -> list[str]:
    return [d.key for d in extract(text)]


def spans(text: str, known: tuple[Document, ...] = ()) -> list[tuple[str, str | None]]:
    nfc = unicodedata.normalize("NFC", text)
    return [
        (nfc[m.start : m.end], m.document.key if m.document else None)
        for m in find_mentions(text, known)
    ]


# The sample bulletin


def test_sample_documents_in_order_of_first_mention() -> None:
    docs = extract(SAMPLE.read_text(encoding="utf-8"))
    assert [d.key for d in docs] == [
        "qd-ttg-628-2020",
        "kl-tw-51-2019",
        "qd-ubnd-1385",
        "nq-tw-29",
        "nq-cp-44-2014",
    ]
    assert [d.title for d in docs] == [
        "Quyết định số 628/QĐ-TTg ngày 11/05/2020",
        "Kết luận số 51-KL/TW ngày 30/05/2019",
        "Quyết định số 1385/QĐ-UBND",
        "Nghị quyết số 29-NQ/TW",
        "Nghị quyết số 44/NQ-CP ngày 09/06/2014",
    ]


def test_sample_short_references() -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    short = [(t, k) for t, k in spans(text) if "/" not in t]
    assert short == [
        ("Kết luận 51", "kl-tw-51-2019"),
        ("Kết luận 51", "kl-tw-51-2019"),
        ("Quyết định 628", "qd-ttg-628-2020"),
        ("Quyết định 1696", None),  # never cited in full: not guessed
        ("Kế hoạch 155", None),
    ]
    assert "Kế hoạch này" not in [t for t, _ in spans(text)]
    assert all(not t.startswith("Nghị quyết Hội nghị") for t, _ in spans(text))


def test_sample_as_a_bulletin_with_an_html_body() -> None:
    lines = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    title, summary, body = lines[3], lines[4], lines[6:]
    body_html = "".join(f"<p>{line}</p>" for line in body)
    docs = extract_bulletin(title, summary, body_html)
    assert [d.key for d in docs][:2] == ["qd-ttg-628-2020", "kl-tw-51-2019"]
    assert {d.key for d in docs} == {
        "qd-ttg-628-2020",
        "kl-tw-51-2019",
        "qd-ubnd-1385",
        "nq-tw-29",
        "nq-cp-44-2014",
    }


# Keys, names, types


@pytest.mark.parametrize(
    ("text", "key", "name", "doc_type", "issuer", "year"),
    [
        (
            "Quyết định số 628/QĐ-TTg",
            "qd-ttg-628",
            "Quyết định số 628/QĐ-TTg",
            "Quyết định",
            "QĐ-TTg",
            None,
        ),
        (
            "Nghị quyết số 29-NQ/TW",
            "nq-tw-29",
            "Nghị quyết số 29-NQ/TW",
            "Nghị quyết",
            "NQ/TW",
            None,
        ),
        (
            "Nghị định số 15/2020/NĐ-CP",
            "nd-cp-15-2020",
            "Nghị định số 15/2020/NĐ-CP",
            "Nghị định",
            "NĐ-CP",
            2020,
        ),
        (
            "Thông tư 32/2018/TT-BGDĐT",
            "tt-bgddt-32-2018",
            "Thông tư số 32/2018/TT-BGDĐT",
            "Thông tư",
            "TT-BGDĐT",
            2018,
        ),
        (
            "Luật Giáo dục số 43/2019/QH14",
            "qh14-43-2019",
            "Luật Giáo dục số 43/2019/QH14",
            "Luật",
            "QH14",
            2019,
        ),
        (
            "Công văn số 1234/UBND-VX",
            "ubnd-vx-1234",
            "Công văn số 1234/UBND-VX",
            "Công văn",
            "UBND-VX",
            None,
        ),
        (
            "Thông tư liên tịch số 05/2021/TTLT-BTC-BNV",
            "ttlt-btc-bnv-5-2021",
            "Thông tư liên tịch số 05/2021/TTLT-BTC-BNV",
            "Thông tư liên tịch",
            "TTLT-BTC-BNV",
            2021,
        ),
        # No type word: the code's abbreviation names the type.
        (
            "theo số 628/QĐ-TTg",
            "qd-ttg-628",
            "Quyết định số 628/QĐ-TTg",
            "Quyết định",
            "QĐ-TTg",
            None,
        ),
        ("và 51-KL/TW", "kl-tw-51", "Kết luận số 51-KL/TW", "Kết luận", "KL/TW", None),
        # A generic type word yields to the code's.
        ("Văn bản số 44/NQ-CP", "nq-cp-44", "Nghị quyết số 44/NQ-CP", "Nghị quyết", "NQ-CP", None),
        # Capitalised however the text wrote it.
        (
            "thực hiện quyết định số 12/QĐ-UBND",
            "qd-ubnd-12",
            "Quyết định số 12/QĐ-UBND",
            "Quyết định",
            "QĐ-UBND",
            None,
        ),
        (
            "QUYẾT ĐỊNH SỐ 540/QĐ-UBND",
            "qd-ubnd-540",
            "Quyết định số 540/QĐ-UBND",
            "Quyết định",
            "QĐ-UBND",
            None,
        ),
    ],
)
def test_key_and_name(
    text: str, key: str, name: str, doc_type: str, issuer: str, year: int | None
) -> None:
    (doc,) = extract(text)
    assert (doc.key, doc.name, doc.doc_type, doc.issuer, doc.year) == (
        key,
        name,
        doc_type,
        issuer,
        year,
    )
    assert KEY.fullmatch(doc.key)


def test_same_number_from_two_issuers_is_two_documents() -> None:
    assert keys("Quyết định số 100/QĐ-UBND và Quyết định số 100/QĐ-TTg") == [
        "qd-ubnd-100",
        "qd-ttg-100",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Quyết định số 628/QD-TTg ngày 11/5/2020",  # typed without đ
        "Quyết định số 628/QÐ-TTg ngày 11/5/2020",  # Ð U+00D0, the eth lookalike
        "Quyết định số 628/QĐ–TTg ngày 11/5/2020",  # en dash
        "Quyết định số 628 /QĐ-TTg ngày 11/5/2020",
        "Quyết định số: 628/QĐ-TTg ngày 11/5/2020",
        "quyết định 628/QĐ-TTg ngày 11/5/2020",
    ],
)
def test_spelling_quirks_give_the_same_document(text: str) -> None:
    (doc,) = extract(text)
    assert doc.key == "qd-ttg-628-2020"
    assert doc.name == "Quyết định số 628/QĐ-TTg"


def test_leading_zeros_are_the_same_number() -> None:
    assert keys("Chỉ thị số 05-CT/TW") == keys("Chỉ thị số 5-CT/TW") == ["ct-tw-5"]
    (doc,) = extract("Chỉ thị số 05-CT/TW")
    assert doc.name == "Chỉ thị số 05-CT/TW"  # shown as written


# Dates


@pytest.mark.parametrize(
    "written",
    ["ngày 11/5/2020", "ngày 11/05/2020", "ngày 11-5-2020", "ngày 11.5.2020",
     "ngày 11 tháng 5 năm 2020", "ngày 11 tháng 05 năm 2020", ", ngày 11/5/2020"],
)  # fmt: skip
def test_date_forms(written: str) -> None:
    text = f"Quyết định số 628/QĐ-TTg{written} của Thủ tướng"
    if not written.startswith(","):
        text = f"Quyết định số 628/QĐ-TTg {written} của Thủ tướng"
    (doc,) = extract(text)
    assert doc.issued_on == date(2020, 5, 11)
    assert doc.key == "qd-ttg-628-2020"
    ((span, _),) = spans(text)
    assert span.endswith("2020")


def test_an_impossible_date_is_no_date() -> None:
    ((span, key),) = spans("Nghị quyết số 10/NQ-HĐND ngày 31/02/2021 của HĐND tỉnh")
    assert (span, key) == ("Nghị quyết số 10/NQ-HĐND", "nq-hdnd-10")


def test_the_number_year_wins_over_the_date_year() -> None:
    (doc,) = extract("Nghị định số 15/2020/NĐ-CP ngày 31/12/2019")
    assert (doc.key, doc.year, doc.issued_on) == ("nd-cp-15-2020", 2020, date(2019, 12, 31))


def test_a_document_cited_with_and_without_its_date_keeps_the_date() -> None:
    docs = extract(
        "Quyết định số 628/QĐ-TTg của Thủ tướng",
        None,
        "Theo Quyết định số 628/QĐ-TTg ngày 11/5/2020 và Nghị định số 15/2020/NĐ-CP, "
        "Nghị định số 15/2020/NĐ-CP ngày 03/02/2020",
    )
    assert [(d.key, d.issued_on) for d in docs] == [
        ("qd-ttg-628-2020", date(2020, 5, 11)),
        ("nd-cp-15-2020", date(2020, 2, 3)),
    ]


def test_undated_citation_stays_apart_when_two_dated_ones_could_be_it() -> None:
    text = (
        "Quyết định số 5/QĐ-UBND ngày 3/1/2020, Quyết định số 5/QĐ-UBND ngày 4/1/2021 "
        "và Quyết định số 5/QĐ-UBND"
    )
    assert keys(text) == ["qd-ubnd-5-2020", "qd-ubnd-5-2021", "qd-ubnd-5"]


def test_texts_do_not_run_into_each_other() -> None:
    assert extract("Ban hành Quyết định", "628/TTg-KGVX") == []


# Short references


def test_short_reference_resolves_to_the_one_full_citation() -> None:
    text = "Nghị định số 15/2020/NĐ-CP quy định. Theo Nghị định số 15, mức phạt tăng."
    assert spans(text) == [
        ("Nghị định số 15/2020/NĐ-CP", "nd-cp-15-2020"),
        ("Nghị định số 15", "nd-cp-15-2020"),
    ]


def test_short_reference_with_a_date() -> None:
    text = "Nghị định số 15/2020/NĐ-CP. Nghị định 15 ngày 03/02/2020 thay thế Nghị định 174."
    assert spans(text)[1:] == [("Nghị định 15", "nd-cp-15-2020"), ("Nghị định 174", None)]
    assert find_mentions("Kế hoạch 5 ngày làm việc") == []


def test_ambiguous_or_absent_short_reference_is_unresolved() -> None:
    text = "Quyết định số 100/QĐ-UBND và Quyết định số 100/QĐ-TTg. Quyết định 100; Chỉ thị 16."
    assert spans(text)[2:] == [("Quyết định 100", None), ("Chỉ thị 16", None)]


def test_short_reference_resolves_against_known_documents() -> None:
    known = tuple(extract("Kết luận số 51-KL/TW ngày 30/5/2019"))
    assert spans("Quán triệt Kết luận 51.", known) == [("Kết luận 51", "kl-tw-51-2019")]
    assert extract("Quán triệt Kết luận 51.") == []  # short references add nothing


@pytest.mark.parametrize(
    "text",
    ["Kế hoạch này", "Kế hoạch 5 năm 2021-2025", "Kế hoạch 6 tháng cuối năm",
     "Quyết định khen thưởng 25 tập thể", "Kế hoạch 2024 của ngành",
     "Nghị quyết Hội nghị Trung ương 8 khóa XI", "Chương trình 135", "kế hoạch 155"],
)  # fmt: skip
def test_not_short_references(text: str) -> None:
    assert find_mentions(text) == []


# NFD input


def test_nfd_input_gives_nfc_offsets_and_the_same_documents() -> None:
    nfc = SAMPLE.read_text(encoding="utf-8")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert extract(nfd) == extract(nfc)
    assert find_mentions(nfd) == find_mentions(nfc)
    first = find_mentions(nfd)[0]
    assert nfc[first.start : first.end] == "Quyết định số 628/QĐ-TTg ngày 11/5/2020"


# extract_bulletin


def test_extract_bulletin_reads_the_whole_body() -> None:
    filler = "<p>" + "Nội dung triển khai. " * 400 + "</p>"  # far past an excerpt's 4 KiB
    body = filler + "<p>Thực hiện <b>Chỉ thị số 12/CT-TTg</b> ngày 25/4/2022.</p>"
    assert len(body) > 8000
    docs = extract_bulletin("Tin hoạt động", None, body)
    # Read as the reader sees it: the date after the bold code still dates it.
    assert [d.key for d in docs] == ["ct-ttg-12-2022"]


def test_extract_bulletin_reads_title_and_summary() -> None:
    docs = extract_bulletin(
        "Triển khai Nghị quyết số 68/NQ-CP",
        "Theo Nghị quyết số 68/NQ-CP ngày 01/7/2021 và Quyết định số 23/2021/QĐ-TTg",
        "<p>Người lao động được hỗ trợ.</p>",
    )
    assert [d.key for d in docs] == ["nq-cp-68-2021", "qd-ttg-23-2021"]


def test_extract_bulletin_reads_entities_as_text() -> None:
    docs = extract_bulletin("Tin", None, "<p>Quyết&nbsp;định số 12/QĐ-UBND &amp; khác</p>")
    assert [d.key for d in docs] == ["qd-ubnd-12"]


# Linking


DOCS = tuple(extract(SAMPLE.read_text(encoding="utf-8")))


def test_linkify_html_links_full_and_short_mentions() -> None:
    html = (
        "<p>Thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 và <b>Kết luận 51</b>, "
        "Quyết định 1696.</p>"
    )
    assert citations.linkify_html(html, DOCS, href) == (
        '<p>Thực hiện <a class="citation" href="/van-ban/qd-ttg-628-2020/">Quyết định số '
        '628/QĐ-TTg ngày 11/5/2020</a> và <b><a class="citation" href="/van-ban/kl-tw-51-2019/">'
        "Kết luận 51</a></b>, Quyết định 1696.</p>"
    )


def test_linkify_html_leaves_links_attributes_and_unknown_documents_alone() -> None:
    html = (
        '<p title="Quyết định số 628/QĐ-TTg"><a href="/x">Quyết định số 628/QĐ-TTg</a> '
        "<a href='/y'><i>Kết luận 51</i></a> Thông tư số 32/2018/TT-BGDĐT</p>"
    )
    assert citations.linkify_html(html, DOCS, href) == html


def test_linkify_html_does_not_join_a_citation_split_by_markup() -> None:
    html = "<p>Quyết định số <b>628/QĐ-TTg</b></p>"
    # "628/QĐ-TTg" alone is a citation of the same document (the code names the type).
    assert citations.linkify_html(html, DOCS, href) == (
        '<p>Quyết định số <b><a class="citation" href="/van-ban/qd-ttg-628-2020/">628/QĐ-TTg'
        "</a></b></p>"
    )
    html = "<p>Nghị quyết số 29-<i>NQ/TW</i></p>"
    assert citations.linkify_html(html, DOCS, href) == html


def test_linkify_html_entities_and_escaping() -> None:
    html = "<p>A &amp; B &lt;Quyết định 628&gt; &quot;x&quot; Kết luận&nbsp;51</p>"
    out = citations.linkify_html(html, DOCS, lambda d: f"/v?k={d.key}&x=<1>")
    assert out == (
        '<p>A &amp; B &lt;<a class="citation" href="/v?k=qd-ttg-628-2020&amp;x=&lt;1&gt;">'
        "Quyết định 628</a>&gt; &#34;x&#34; "
        '<a class="citation" href="/v?k=kl-tw-51-2019&amp;x=&lt;1&gt;">Kết luận\xa051</a></p>'
    )


def test_linkify_html_without_documents_or_mentions_is_unchanged() -> None:
    html = "<p>Ngày 30/7/2020 &amp; <br/>số 5 đường Trường Chinh</p>"
    assert citations.linkify_html(html, DOCS, href) == html
    assert citations.linkify_html("<p>Quyết định số 628/QĐ-TTg</p>", (), href) == (
        "<p>Quyết định số 628/QĐ-TTg</p>"
    )


def test_linkify_html_undated_mention_links_to_the_dated_document() -> None:
    out = citations.linkify_html("<p>Quyết định số 628/QĐ-TTg</p>", DOCS, href)
    assert 'href="/van-ban/qd-ttg-628-2020/"' in out


def test_linkify_text() -> None:
    out = citations.linkify_text("a < b & Quyết định 628, Kế hoạch 155", DOCS, href)
    assert out == (
        'a &lt; b &amp; <a class="citation" href="/van-ban/qd-ttg-628-2020/">Quyết định 628</a>'
        ", Kế hoạch 155"
    )
    assert citations.linkify_text("<b>", (), href) == "&lt;b&gt;"


# Hostile input: every pattern stays linear


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "Quyết định số ", "1/", "1-", "Luật Giáo dục Đào tạo ", "Quyết định 1", "ngày 1/1/",
        "12/QĐ-", "12-NQ/", "QĐ-TTg-", "Kết luận số 51-KL/TW ngày 30/5/2019 ", "9" * 50 + " ",
        "<a>", "<p title='", "&amp;", "số: ",
    ],
)  # fmt: skip
def test_hostile_text_finishes(unit: str) -> None:
    text = (unit * (100_000 // len(unit) + 1))[:100_000]
    find_mentions(text, DOCS)
    extract(text)
    citations.linkify_html(text, DOCS, href)
    citations.linkify_text(text, DOCS, href)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "text",
    [
        "Luật " + "a" * 100_000,
        "Quyết định" + " " * 100_000 + "x",
        "Quyết định số 1/QĐ-UBND" + " " * 100_000 + ",",
        "<p" + " title=x" * 12_000,
        "Luật Giáo dục, " * 7_000 + "số 43/2019/QH14",
    ],
    ids=["one-long-word", "long-space-run", "code-then-spaces", "unclosed-tag", "long-title"],
)
def test_hostile_shapes_finish(text: str) -> None:
    find_mentions(text, DOCS)
    citations.linkify_html(text, DOCS, href)


@pytest.mark.timeout(60)
def test_many_distinct_citations_finish() -> None:
    # 100 KB of distinct documents and short references: resolving is indexed, not a scan.
    text = " ".join(f"Quyết định số {i}/QĐ-UBND, Quyết định {i}" for i in range(2000))
    assert len(text) > 80_000
    docs = extract(text)
    assert len(docs) == 2000
    mentions = find_mentions(text, docs)
    assert sum(m.document is not None for m in mentions) == 4000
    assert citations.linkify_html(f"<p>{text}</p>", docs, href).count('class="citation"') == 4000


@pytest.mark.parametrize(
    ("text", "identifier"),
    [
        ("Quyết định số 628/QĐ-TTg ngày 11/5/2020", "628/QĐ-TTg"),
        ("Nghị quyết số 29-NQ/TW", "29-NQ/TW"),
        ("Nghị định số 15/2020/NĐ-CP", "15/2020/NĐ-CP"),
        # A law's title sits between its type and number: not part of the identifier.
        ("Luật Giáo dục số 43/2019/QH14", "43/2019/QH14"),
        ("Quyết định số 628/QĐ - TTg", "628/QĐ-TTg"),  # loosely typed, written as it should be
    ],
)
def test_each_document_carries_its_number_as_official_texts_write_it(
    text: str, identifier: str
) -> None:
    (found,) = extract(text)
    assert found.identifier == identifier
