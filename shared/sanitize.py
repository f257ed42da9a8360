"""Everything an agency sends becomes clean NFC text or allowlisted HTML before it is stored.

- `clean_text` for every string field: NFC, and no character XML 1.0 forbids (a single control
  character would otherwise make every feed containing the bulletin unbuildable).
- `body_to_html` turns a body in any accepted format into safe HTML: `text` and `markdown`
  bodies can never inject markup, `html` bodies keep only an allowlist (nh3 / ammonia).
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import urljoin

import nh3
from markdown_it import MarkdownIt

from shared.models import BodyFormat

# XML 1.0 Char production, minus the discouraged C1 controls: what stays is safe in any feed.
_XML_FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"
)
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "h2", "h3", "h4", "h5", "h6",
        "strong", "b", "em", "i", "u", "s", "sub", "sup", "mark", "small", "abbr", "cite", "q",
        "blockquote", "pre", "code", "ul", "ol", "li", "dl", "dt", "dd",
        "a", "img", "figure", "figcaption",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "abbr": {"title"},
    "th": {"colspan", "rowspan", "scope"},
    "td": {"colspan", "rowspan"},
    "ol": {"start"},
}
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
_URL_ATTRIBUTES = {("a", "href"), ("img", "src")}
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_IMG_WITHOUT_ALT = re.compile(r"<img(?![^>]*\salt=)")
_A_WITHOUT_HREF = re.compile(r"<a(?=\s)(?![^>]*\shref=)[^>]*>")
_H1 = re.compile(r"(</?)h1\b", re.IGNORECASE)


def clean_text(value: str) -> str:
    """NFC, Unix newlines, and nothing an XML feed cannot carry."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _XML_FORBIDDEN.sub("", unicodedata.normalize("NFC", value))


def text_to_html(text: str) -> str:
    """Plain text: paragraphs split at blank lines, single newlines kept as <br>."""
    paragraphs = (p.strip() for p in _BLANK_LINES.split(text.strip()))
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line.strip()) for line in p.split("\n")) + "</p>"
        for p in paragraphs
        if p
    )


def sanitize_html(fragment: str, *, base_url: str) -> str:
    """Keep only the allowlist, with every link and image made absolute against `base_url`.

    Absolute URLs matter in feeds: a reader resolves a relative link against its own address.
    """

    def absolutise(tag: str, attribute: str, value: str) -> str | None:
        if (tag, attribute) in _URL_ATTRIBUTES:
            return urljoin(base_url + "/", value.strip())
        return value

    cleaned = nh3.clean(
        _H1.sub(r"\1h2", fragment),  # the page title is the one <h1>; body headings go below it
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        clean_content_tags={"script", "style", "template", "iframe", "object", "noscript"},
        link_rel="noopener noreferrer",
        strip_comments=True,
        attribute_filter=absolutise,
    )
    # ammonia drops a bad href but keeps the <a> with its rel, and keeps <img> without alt:
    # both are invalid HTML. A bare <a> is valid. nh3 always serialises attributes
    # double-quoted, so these patterns see a normalised form.
    cleaned = _A_WITHOUT_HREF.sub("<a>", cleaned)
    return _IMG_WITHOUT_ALT.sub('<img alt=""', cleaned)


def body_to_html(body: str, body_format: BodyFormat, *, base_url: str) -> str:
    if body_format is BodyFormat.TEXT:
        return text_to_html(body)
    if body_format is BodyFormat.MARKDOWN:
        # Raw HTML is disabled in the parser; the sanitiser still runs to drop
        # javascript: links and the like.
        return sanitize_html(_MARKDOWN.render(body), base_url=base_url)
    return sanitize_html(body, base_url=base_url)
