import unicodedata

import html5lib
import pytest
from lxml import etree

from shared.models import BodyFormat
from shared.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    body_to_html,
    clean_text,
    nesting_depth,
    sanitize_html,
    text_to_html,
)

BASE = "https://bantin.example.vn"


def test_clean_text_normalises_to_nfc_and_drops_xml_forbidden_characters() -> None:
    nfd = unicodedata.normalize("NFD", "Tiếng Việt")
    cleaned = clean_text(nfd + "\x00\x08\x0b\x1f\ud800\ufffe\r\nmới")
    assert cleaned == "Tiếng Việt\nmới"
    assert unicodedata.is_normalized("NFC", cleaned)
    # Whatever is left must be storable in an XML document.
    etree.fromstring(f"<t>{cleaned}</t>".encode())


def test_clean_text_drops_what_html_forbids_too() -> None:
    # Noncharacters are allowed in XML but are parse errors in an HTML page; NEL is a newline.
    cleaned = clean_text("a\x85b\x9fc\ufdd0d\ufdefe\U0001fffef\U0010ffffg")
    assert cleaned == "a\nbcdefg"


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
        f'<img src="{BASE}/anh.png" alt="">'
        '<abbr title="Ủy ban nhân dân">UBND</abbr>'
    )


def test_existing_alt_text_is_kept() -> None:
    html = sanitize_html('<img alt="Ảnh hội nghị" src="https://x.vn/a.jpg">', base_url=BASE)
    assert html == '<img alt="Ảnh hội nghị" src="https://x.vn/a.jpg">'


# --- hostile HTML: nothing executable survives, whatever nh3 version is installed ---------

# Attribute breakers (the stored XSS nh3 < 0.3.7 plus the old regexes made of the first one),
# mutation-XSS classics that rely on raw-text elements or foreign content parsing otherwise
# than the sanitiser did, and the usual event-handler and URL vectors.
XSS_PAYLOADS = (
    '<a title="><img src=x onerror=alert(1)>">t</a>',
    '<a title="</a><script>alert(1)</script>">t</a>',
    "<a title='\"><svg onload=alert(1)>'>t</a>",
    '<img alt="\\"><svg onload=alert(1)>" src="a.png">',
    '<img alt="&quot;&gt;&lt;svg onload=alert(1)&gt;" src="a.png">',
    '<img src="a.png" title="><img src=x onerror=alert(1)>">',
    '<abbr title="><iframe src=javascript:alert(1)>">x</abbr>',
    '<a href="https://gov.vn" title="x&quot; onmouseover=&quot;alert(1)">t</a>',
    '<a title="<img src=x onerror=alert(1)>" href="javascript:alert(1)">t</a>',
    '<a href="javascript:alert(1)" title=">"><img src=x onerror=alert(1)>',
    "<img src=x onerror=alert(1)//",
    '<p title="</p><img src=x onerror=alert(1)>">x</p>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    "<noscript><style></noscript><img src=x onerror=alert(1)></style></noscript>",
    "<svg><style><img src=x onerror=alert(1)></style></svg>",
    '<svg></p><style><a id="</style><img src=1 onerror=alert(1)>">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;/mglyph&gt;'
    '&lt;img&Tab;src=1&Tab;onerror=alert(1)&gt;">',
    '<math><mi><mglyph><svg><mtext><textarea><path id="</textarea><img onerror=alert(1) src=1>">',
    '<svg><foreignobject><p><style><p title="</style><iframe onload&#x3d;alert(1)>">',
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    "<svg><a><foreignObject><a><table><a></table><style><!--</style></svg>"
    '<a title="--><img src onerror=alert(1)>">',
    '<svg><iframe><a title="</iframe><img src onerror=alert(1)>">test',
    "<svg><script>alert(1)</script></svg>",
    "<svg/onload=alert(1)>",
    "<math href=javascript:alert(1)>x</math>",
    "<math><maction actiontype=statusline xlink:href=javascript:alert(1)>x</maction></math>",
    "<textarea></textarea><img src=x onerror=alert(1)>",
    "<title><img src=x onerror=alert(1)></title>",
    "<xmp><img src=x onerror=alert(1)></xmp>",
    "<xmp></xmp><img src=x onerror=alert(1)>",
    "<noembed><img src=x onerror=alert(1)></noembed>",
    "<noframes><img src=x onerror=alert(1)></noframes>",
    "<iframe><img src=x onerror=alert(1)></iframe>",
    '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>',
    "<plaintext><img src=x onerror=alert(1)>",
    "<template><img src=x onerror=alert(1)></template>",
    "<style><img src=x onerror=alert(1)></style>",
    "<style></style><img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<script src=//evil.example/x.js></script>",
    "<scr<script>ipt>alert(1)</script>",
    "<<script>script>alert(1)<</script>/script>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<!--><img src=x onerror=alert(1)>-->",
    "<!----!><img src=x onerror=alert(1)>-->",
    "<!-- --!><img src=x onerror=alert(1)> -->",
    "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "<?xml version=1?><img src=x onerror=alert(1)>",
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x ONERROR=alert(1)>",
    "<img src=x oNeRrOr=alert(1)>",
    "<img src=x onerror\n=alert(1)>",
    "<img/src=x/onerror=alert(1)>",
    "<img src=`x` onerror=`alert(1)`>",
    "<img src=javascript:alert(1)>",
    '<img src="jav&#x09;ascript:alert(1)">',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<img src=x:alert(alt) onerror=eval(src) alt=0>",
    '<img srcset="javascript:alert(1) 1x" src="a.png">',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="java\tscript:alert(1)">x</a>',
    '<a href="java&#x0A;script:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="&#x6A;avascript:alert(1)">x</a>',
    '<a href="javascript&colon;alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="\x01javascript:alert(1)">x</a>',
    '<a href="//evil.example/%0Aalert(1)" onclick="alert(1)">x</a>',
    '<a href="https://gov.vn" onmouseover="alert(1)" style="x:expression(alert(1))">x</a>',
    '<a href="https://gov.vn" target="_blank" rel="opener">x</a>',
    '<a href="https://gov.vn" ping="https://evil.example">x</a>',
    '<a href="https://gov.vn" download>x</a>',
    '<p onclick="alert(1)">x</p>',
    '<p style="background:url(javascript:alert(1))">x</p>',
    '<p id="x" class="y" tabindex="1" autofocus onfocus="alert(1)">x</p>',
    '<details open ontoggle="alert(1)"><summary>x</summary></details>',
    '<body onload="alert(1)">x</body>',
    '<input autofocus onfocus="alert(1)">',
    '<button formaction="javascript:alert(1)">x</button>',
    '<form action="javascript:alert(1)"><input type=submit></form>',
    '<isindex action="javascript:alert(1)" type=image>',
    '<video><source onerror="alert(1)"></video>',
    '<audio src=x onerror="alert(1)">',
    '<object data="javascript:alert(1)"></object>',
    '<embed src="javascript:alert(1)">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="javascript:alert(1)//">',
    '<link rel="stylesheet" href="javascript:alert(1)">',
    '<marquee onstart="alert(1)">x</marquee>',
    '<div style="width:expression(alert(1))">x</div>',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    "<table><td><img src=x onerror=alert(1)></td></table>",
    "<table><caption><svg><style><img src=x onerror=alert(1)></style></svg></caption></table>",
    "<select><template><style></style><img src=x onerror=alert(1)></template></select>",
    "<h1 onclick=alert(1)>x</h1>",
    "<h1><script>alert(1)</script></h1>",
    '<blockquote cite="javascript:alert(1)">x</blockquote>',
    '<q cite="javascript:alert(1)">x</q>',
    "<a href='https://gov.vn'><a href='javascript:alert(1)'>nested</a></a>",
    "<a href=https://gov.vn><p><a href=javascript:alert(1)>x</a></p></a>",
    "<b><i><a href=javascript:alert(1)>misnested</b></i></a>",
    "<img src=x onerror=alert(1)",
    '<img src="x" onerror="alert(1)',
    '<p title="\u2028"><img src=x onerror=alert(1)>',
    "\u003cimg src=x onerror=alert(1)\u003e",
    "&lt;img src=x onerror=alert(1)&gt;",
    "<<img src=x onerror=alert(1)>",
    "<a\u00a0href=javascript:alert(1)>x</a>",
    "<img src=x onerror=alert&#40;1&#41;>",
)
ALLOWED_URL_PREFIXES = ("https://", "http://", "mailto:", "tel:")
GENERIC_ATTRIBUTES = {"title", "lang"}  # ammonia allows these on every element


def dangers(fragment: str) -> list[str]:
    """What a browser would find executable or off-allowlist in `fragment`.

    Parsed as an HTML5 parser does, in the element the page puts bodies in (a <div>).
    """
    tree = html5lib.parseFragment(fragment, container="div", namespaceHTMLElements=False)
    found = []
    for element in tree.iter():
        if not isinstance(element.tag, str) or element.tag == "DOCUMENT_FRAGMENT":
            continue  # a comment
        if element.tag not in ALLOWED_TAGS:
            found.append(f"element {element.tag}")
        allowed = GENERIC_ATTRIBUTES | ALLOWED_ATTRIBUTES.get(element.tag, set())
        if element.tag == "a":
            allowed |= {"rel"}
        for name, value in element.attrib.items():
            if name.lower().startswith("on") or name not in allowed:
                found.append(f"{element.tag}[{name}]")
            if name in ("href", "src") and not value.startswith(ALLOWED_URL_PREFIXES):
                found.append(f"{element.tag}[{name}={value!r}]")
    return found


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_hostile_html_leaves_nothing_executable(payload: str) -> None:
    cleaned = sanitize_html(clean_text(payload), base_url=BASE)
    assert dangers(cleaned) == [], cleaned
    # What is stored is a fixed point: sanitising it again changes nothing.
    assert sanitize_html(cleaned, base_url=BASE) == cleaned


@pytest.mark.parametrize("body_format", [BodyFormat.TEXT, BodyFormat.MARKDOWN])
@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_hostile_html_in_text_and_markdown_bodies_stays_text(
    payload: str, body_format: BodyFormat
) -> None:
    cleaned = body_to_html(clean_text(payload), body_format, base_url=BASE)
    assert dangers(cleaned) == [], cleaned


def test_attribute_breaking_payload_stays_one_attribute() -> None:
    # With nh3 < 0.3.7 and the old regex pass this became <a title=">
    # <img alt="" src=x onerror=alert(1)>...: a stored XSS.
    cleaned = sanitize_html('<a title="><img src=x onerror=alert(1)>">t</a>', base_url=BASE)
    tree = html5lib.parseFragment(cleaned, container="div", namespaceHTMLElements=False)
    (link,) = list(tree)
    assert (link.tag, link.attrib, link.text) == (
        "a",
        {"title": "><img src=x onerror=alert(1)>"},
        "t",
    )
    assert list(link) == []


def test_a_link_that_lost_its_href_loses_rel_too() -> None:
    # rel without href is invalid HTML; a bare <a> is a valid placeholder.
    cleaned = sanitize_html(
        '<a href="javascript:alert(1)" rel="opener">x</a><a href="/a" rel="opener">y</a>',
        base_url=BASE,
    )
    assert cleaned == f'<a>x</a><a href="{BASE}/a" rel="noopener noreferrer">y</a>'


def test_an_image_that_lost_its_source_goes() -> None:
    # An <img> must have a src; one whose URL was refused shows nothing anyway.
    cleaned = sanitize_html('<p>a<img src="javascript:alert(1)" alt="x">b</p>', base_url=BASE)
    assert cleaned == "<p>ab</p>"


def test_headings_move_below_the_page_title() -> None:
    cleaned = sanitize_html('<h1 title="x">Một</h1><H1>Hai</H1><h2>Ba</h2>', base_url=BASE)
    assert cleaned == '<h2 title="x">Một</h2><h2>Hai</h2><h2>Ba</h2>'


def test_links_and_images_become_absolute() -> None:
    cleaned = sanitize_html(
        '<a href="/trang?a=1&section=2">x</a><img src="anh.png" alt="Ảnh">'
        '<a href="//cdn.example/t">y</a><a href="mailto:a@gov.vn">z</a>',
        base_url=BASE + "/",
    )
    assert cleaned == (
        f'<a href="{BASE}/trang?a=1&amp;section=2" rel="noopener noreferrer">x</a>'
        f'<img src="{BASE}/anh.png" alt="Ảnh">'
        '<a href="https://cdn.example/t" rel="noopener noreferrer">y</a>'
        '<a href="mailto:a@gov.vn" rel="noopener noreferrer">z</a>'
    )


def test_text_and_entities_survive_the_round_trip() -> None:
    fragment = "<p>a &lt;b&gt; &amp; c&nbsp;d “e” <code>x &lt; y</code></p><pre>  f\n g</pre>"
    assert sanitize_html(fragment, base_url=BASE) == fragment


@pytest.mark.parametrize(
    ("fragment", "depth"),
    [
        ("<p>a</p><p>b</p>", 0),  # paragraphs close themselves: never deep
        ("<div><div><b>x</b></div></div>", 3),
        ("<div>" * 50, 50),
        ("<b><i><u>" * 10 + "</p>" * 30, 30),  # stray end tags do not reduce it
        ("<ul><li>a<li>b<li>c</ul>", 1),
        ("<br><img src=x><hr>" * 100, 0),
        ("x < y and a<b", 1),  # text that looks like a tag counts: an upper estimate
    ],
)
def test_nesting_depth_is_an_upper_estimate_from_the_tags(fragment: str, depth: int) -> None:
    assert nesting_depth(fragment) == depth


def test_lang_marks_a_passage_in_another_language_and_an_unparsable_one_is_dropped() -> None:
    out = sanitize_html(
        '<p>Ký kết <span lang="en">Memorandum of Understanding</span>, <q lang="fr-CA">oui</q>,'
        ' <q lang="english!">x</q> <span lang="">y</span></p>',
        base_url=BASE,
    )
    assert '<span lang="en">Memorandum of Understanding</span>' in out
    assert '<q lang="fr-CA">oui</q>' in out
    assert "english!" not in out
    assert 'lang=""' not in out
    assert "<span>y</span>" in out
