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
from functools import lru_cache
from html.parser import HTMLParser

import nh3
from markdown_it import MarkdownIt

from shared.models import BodyFormat

# What neither XML 1.0 nor HTML allows in text: controls but tab and newline, surrogates, and
# the noncharacters (each a parse error in HTML, discouraged in XML). What stays is safe in
# any feed and any page.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_FORBIDDEN = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")

ALLOWED_TAGS = frozenset(
    {
        "p", "br", "hr", "h2", "h3", "h4", "h5", "h6",
        "strong", "b", "em", "i", "u", "s", "sub", "sup", "mark", "small", "abbr", "cite", "q",
        "blockquote", "pre", "code", "ul", "ol", "li", "dl", "dt", "dd", "span",
        "a", "img", "figure", "figcaption",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "*": {"title", "lang"},  # ammonia's generic attributes, said out loud
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "th": {"colspan", "rowspan", "scope"},
    "td": {"colspan", "rowspan"},
    "ol": {"start"},
}
# A BCP 47 shape (language, then subtags): a `lang` the page's readers and checkers cannot
# parse ("english!") is dropped rather than published (axe-core's valid-lang, WCAG 3.1.2).
_LANG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
LINK_REL = "noopener noreferrer"
# Removed with everything inside. svg and math too: foreign content parses by other rules
# (the root of most mutation-XSS), and nothing in a bulletin needs it.
_DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "template", "iframe", "object", "noscript", "svg", "math"}
)
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def clean_text(value: str) -> str:
    """NFC, Unix newlines, and nothing an XML feed or an HTML page cannot carry."""
    # NEL is the line break of EBCDIC and of some Windows exports: a newline, not a control.
    value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\x85", "\n")
    return _FORBIDDEN.sub("", unicodedata.normalize("NFC", value))


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
    Three steps, and what is stored is always nh3's own output:
    1. nh3 applies the allowlist (h1 still allowed) and decides which URLs stay;
    2. `_Adjust` reads that normalised HTML token by token and fixes what nh3 has no option
       for: h1 becomes h2, an <img> gets an alt or goes if it lost its src, only an <a> that
       kept its href gets rel;
    3. nh3 cleans the result again with the final allowlist.
    """
    first, last = _cleaners(base_url.rstrip("/") + "/")
    adjust = _Adjust()
    adjust.feed(first.clean(fragment))
    adjust.close()
    return last.clean("".join(adjust.out))


@lru_cache(maxsize=8)
def _cleaners(base_url: str) -> tuple[nh3.Cleaner, nh3.Cleaner]:
    first = _cleaner(base_url, ALLOWED_TAGS | {"h1"}, rel=set())
    last = _cleaner(base_url, ALLOWED_TAGS, rel={LINK_REL})
    return first, last


def _cleaner(base_url: str, tags: frozenset[str], *, rel: set[str]) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(tags),
        clean_content_tags=set(_DROPPED_WITH_CONTENT),
        attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        url_relative=("rewrite_with_base", base_url),
        strip_comments=True,
        # ammonia puts link_rel on every <a>, also one whose href it dropped (invalid
        # HTML): _Adjust adds rel itself, and only this exact value passes.
        link_rel=None,
        tag_attribute_values={"a": {"rel": rel}} if rel else None,
        attribute_filter=_valid_lang,
    )


def _valid_lang(tag: str, attribute: str, value: str) -> str | None:
    if attribute != "lang":
        return value
    return value if _LANG.fullmatch(value) else None


class _Adjust(HTMLParser):
    """Rewrites nh3's output one token at a time and writes every token back escaped.

    The input is html5ever's serialisation of a tree: every attribute quoted, every `&` and
    `<` in text escaped, no comments, raw-text elements or foreign content. So each start
    tag, end tag and text run read here is exactly one that html5ever wrote, whatever nh3's
    version escapes inside attribute values.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "h1":  # the page title is the one <h1>; body headings go below it
            tag = "h2"
        elif tag == "img":
            if "src" not in values:  # nh3 dropped its URL: an <img> must have a src
                return
            values.setdefault("alt", "")  # decorative unless the author said otherwise
        elif tag == "a" and "href" in values:
            values["rel"] = LINK_REL  # a bare <a> (href dropped) may not carry rel
        self.out.append(
            f"<{tag}"
            + "".join(f' {name}="{html.escape(value)}"' for name, value in values.items())
            + ">"
        )

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)  # html5ever writes no "/>"; void elements stay void

    def handle_endtag(self, tag: str) -> None:
        self.out.append(f"</{'h2' if tag == 'h1' else tag}>")

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data, quote=False))


def body_to_html(body: str, body_format: BodyFormat, *, base_url: str) -> str:
    if body_format is BodyFormat.TEXT:
        return text_to_html(body)
    if body_format is BodyFormat.MARKDOWN:
        # Raw HTML is disabled in the parser; the sanitiser still runs to drop
        # javascript: links and the like.
        return sanitize_html(_MARKDOWN.render(body), base_url=base_url)
    return sanitize_html(body, base_url=base_url)


# Elements that never nest (void), or that HTML closes by itself when a sibling starts (so
# sloppy `<p>a<p>b` pasted from a word processor does not look deep).
_NO_DEPTH = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot",
        "option", "optgroup", "colgroup", "rp", "rt",
    }
)  # fmt: skip
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")
# HTML parsing (html5ever, under nh3) slows down more than linearly with the depth of open
# elements: a body nested 100,000 deep took nearly two minutes. Real bulletins stay far below.
MAX_NESTING = 1000


def nesting_depth(fragment: str) -> int:
    """An upper estimate of how deep elements nest in `fragment`, from its tags alone (this
    reads untrusted input to bound the parser's work; it never rewrites HTML)."""
    depth = deepest = 0
    for match in _TAG.finditer(fragment):
        if match.group(2).lower() in _NO_DEPTH:
            continue
        if match.group(1):
            depth = max(0, depth - 1)
        else:
            depth += 1
            deepest = max(deepest, depth)
    return deepest
