"""Plain text from a sanitised HTML body, and excerpts cut at a word.

One definition for every place that shows a body as a short text: a page's meta description
and a listing's teasers (services/render) and a feed item's summary (services/feed).
"""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

ELLIPSIS = "…"
# An excerpt is read from this much of the body: enough HTML for a few hundred characters of
# text in any normal bulletin, and it bounds both the parse and the memory of the cache.
SOURCE_CHARS = 4096

# Elements whose edges separate words: "<p>a</p><p>b</p>" reads "a b", while inline markup
# inside a word ("<b>H</b>à") adds no space.
_BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt",
    "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
    "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
)  # fmt: skip
_TRIMMED = " ,.;:-–"  # nothing to leave dangling before the ellipsis
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True)


def plain_text(fragment: str) -> str:
    """The text of an HTML fragment as a reader sees it, whitespace collapsed."""
    # A fragment may end inside a tag or an entity (a cut prefix): the parser drops a cut
    # tag, and a cut entity lies past the excerpt in all but markup-only bodies.
    if not fragment.strip():
        return ""
    try:
        root = etree.fromstring(fragment, _PARSER)
    except (etree.LxmlError, ValueError):
        # A summary is a nicety: a body libxml2 cannot read (or a lone surrogate, which
        # cannot be encoded) must not cost the page or the feed.
        return ""
    if root is None:  # nothing but a comment
        return ""
    for element in root.iter(*_BLOCK_TAGS):
        element.text = " " + (element.text or "")
        element.tail = " " + (element.tail or "")
    return " ".join(etree.tostring(root, method="text", encoding=str).split())


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters, cut between words so no syllable is left half-written."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space > limit // 2:  # a very long word is cut inside rather than left out whole
        cut = cut[:space]
    return cut.rstrip(_TRIMMED) + ELLIPSIS


def excerpt(fragment: str, limit: int) -> str:
    """The start of an HTML body as plain text of at most `limit` characters."""
    return _excerpt_of_prefix(fragment[:SOURCE_CHARS], limit)


# Parsing costs ~40 µs per 2 KiB body, and feeds ask for the same bodies on every rebuild of
# every listing they are in. Keyed by the prefix, so the cache holds at most 1024 × 4 KiB.
@lru_cache(maxsize=1024)
def _excerpt_of_prefix(prefix: str, limit: int) -> str:
    return shorten(plain_text(prefix), limit)
