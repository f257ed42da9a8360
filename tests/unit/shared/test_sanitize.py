import unicodedata

from lxml import etree

from shared.models import BodyFormat
from shared.sanitize import body_to_html, clean_text, sanitize_html, text_to_html

BASE = "https://bantin.example.vn"


def test_clean_text_normalises_to_nfc_and_drops_xml_forbidden_characters() -> None:
    nfd = unicodedata.normalize("NFD", "Tiếng Việt")
    cleaned = clean_text(nfd + "\x00\x08\x0b\x1f\ud800\ufffe\r\nmới")
    assert cleaned == "Tiếng Việt\nmới"
    assert unicodedata.is_normalized("NFC", cleaned)
    # Whatever is left must be storable in an XML document.
    etree.fromstring(f"<t>{cleaned}</t>".encode())


def test_clean_text_keeps_tabs_newlines_and_ordinary_unicode() -> None:
    text = "a\tb\nc — “trích dẫn” 😀 ₫"
    assert clean_text(text) == text


def test_text_bodies_become_paragraphs_and_cannot_inject_markup() -> None:
    html = text_to_html("Đoạn một\ndòng hai\n\n\n  Đoạn <b>hai</b> & ba  \n\n")
    assert html == "<p>Đoạn một<br>\ndòng hai</p>\n<p>Đoạn &lt;b&gt;hai&lt;/b&gt; &amp; ba</p>"


def test_markdown_renders_but_raw_html_and_script_links_do_not() -> None:
    html = body_to_html(
        "# Tiêu đề\n\n**đậm** <script>alert(1)</script> [x](javascript:alert(1)) [ok](/trang)",
        BodyFormat.MARKDOWN,
        base_url=BASE,
    )
    assert "<h2>Tiêu đề</h2>" in html  # h1 is the page title's alone
    assert "<strong>đậm</strong>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html.replace("[x](javascript:alert(1))", "")
    assert f'href="{BASE}/trang"' in html


def test_html_bodies_keep_the_allowlist_only() -> None:
    html = sanitize_html(
        '<p style="color:red" onclick="x()">Xin <em>chào</em></p>'
        "<script>alert(1)</script><style>p{}</style><iframe src=//evil></iframe>"
        '<a href="javascript:alert(1)" target="_blank">bad</a>'
        '<a href="https://gov.vn">good</a>'
        '<img src="anh.png" onerror="x()">'
        "<abbr title='Ủy ban nhân dân'>UBND</abbr>",
        base_url=BASE,
    )
    assert html == (
        "<p>Xin <em>chào</em></p>"
        "<a>bad</a>"
        '<a href="https://gov.vn" rel="noopener noreferrer">good</a>'
        f'<img alt="" src="{BASE}/anh.png">'
        '<abbr title="Ủy ban nhân dân">UBND</abbr>'
    )


def test_existing_alt_text_is_kept() -> None:
    html = sanitize_html('<img alt="Ảnh hội nghị" src="https://x.vn/a.jpg">', base_url=BASE)
    assert html == '<img alt="Ảnh hội nghị" src="https://x.vn/a.jpg">'
