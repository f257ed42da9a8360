"""Vietnamese legal-document citations in a bulletin's text: what it cites, and where.

Pure functions, no I/O. Official texts cite documents as ``Quyết định số 628/QĐ-TTg ngày
11/5/2020``, ``Nghị quyết số 29-NQ/TW``, ``Nghị quyết 44/NQ-CP ngày 09/6/2014``, ``Nghị định
số 15/2020/NĐ-CP``, ``Thông tư 32/2018/TT-BGDĐT`` ..., and then refer back to them by short
name (``Quyết định 628``, ``Kết luận 51``). A short name resolves to the full citation it
abbreviates only when exactly one full citation in the same bulletin fits; otherwise it stays
plain text (``Quyết định 1696`` in the sample names a document the bulletin never cites in
full: nothing is guessed).

Each document has a canonical key, ``{issuer code slug}-{number}[-{year}]``
(``qd-ttg-628-2020``): the same number from two issuers stays two documents. The year comes
from the number (``15/2020/NĐ-CP``) or else from the stated date; a citation with neither
has a key without a year (``nq-tw-29``).

A mention starts at the type word when it stands right before the number (with or without
"số"; for Luật, Bộ luật and Pháp lệnh also with the law's title between: ``Luật Giáo dục số
43/2019/QH14``), else at the number (``theo số 628/QĐ-TTg``, where the code's abbreviation
names the type); it ends after the issuer code, or after the date when ``ngày …`` follows.
A number with a code but no type word counts only when the code opens with a type
abbreviation (QĐ, NQ, NĐ, TT, CT, KL, KH, TB, HD, QH14 …): ``1234/UBND-VX`` needs its
``Công văn``. The issuer code is read as written, Ð (U+00D0) taken for Đ and QD for QĐ, so
spelling variants of one document share its key; leading zeros of the number do not count
(``05-CT/TW`` is ``ct-tw-5``).

Not read (known misses): a date in brackets or after the issuer's name (``628/QĐ-TTg (ngày
11/5/2020)``, ``15/2020/NĐ-CP của Chính phủ ngày …``), codes with dots (``UBND-TH.KT``
stops at ``UBND-TH``), a công văn cited by its number alone, type abbreviations used as type
words (``QĐ số 123/QĐ-UBND`` is read from the number).

Input may be NFC or NFD: it is NFC-normalised first, and every offset is into the NFC text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from html import unescape

from markupsafe import Markup, escape

from shared.excerpt import plain_text
from shared.slug import slugify


@dataclass(frozen=True, slots=True)
class Document:
    """One cited document."""

    key: str  # "qd-ttg-628-2020": [a-z0-9-], at most 120 characters
    doc_type: str  # "Quyết định", as the type is written in full (NFC, capitalised)
    number: str  # "628"
    year: int | None  # 2020
    issuer: str  # "QĐ-TTg": the issuer code as official texts write it (NFC)
    name: str  # "Quyết định số 628/QĐ-TTg": the display name, without the date
    issued_on: date | None  # 2020-05-11 when the text states it
    # "628/QĐ-TTg", "29-NQ/TW", "15/2020/NĐ-CP": the number as official texts write it (what
    # JSON-LD's legislationIdentifier takes)
    identifier: str

    @property
    def title(self) -> str:
        """The name with its date when known: "Quyết định số 628/QĐ-TTg ngày 11/05/2020"."""
        return titled(self.name, self.issued_on)


def titled(name: str, issued_on: date | None) -> str:
    """A document's name with its date (dd/mm/yyyy, as the site writes dates) when known."""
    return name if issued_on is None else f"{name} ngày {issued_on:%d/%m/%Y}"


@dataclass(frozen=True, slots=True)
class Mention:
    """A stretch of text naming a document: a full citation, or a short back-reference.

    `document` is None for a short reference nothing resolves (shown as plain text)."""

    start: int  # offsets into the NFC text
    end: int
    document: Document | None
    full: bool  # a full citation (number and issuer code), not a short reference


# Document types as official texts write them, in full. The keys are the folded spellings
# (lowercase, one space) a match is looked up by.
DOC_TYPES: tuple[str, ...] = (
    "Thông tư liên tịch", "Nghị quyết liên tịch", "Kế hoạch liên tịch", "Thông tư", "Bộ luật",
    "Luật", "Pháp lệnh", "Nghị định", "Nghị quyết", "Quyết định", "Chỉ thị", "Kết luận",
    "Kế hoạch", "Công văn", "Thông báo", "Thông tri", "Hướng dẫn", "Quy định", "Quy chế",
    "Văn bản", "Công điện", "Tờ trình", "Báo cáo", "Chương trình", "Đề án", "Lệnh",
)  # fmt: skip
_TYPE_BY_FOLDED = {t.lower(): t for t in DOC_TYPES}
# Types whose citations may carry a title before the number: "Luật Giáo dục số 43/2019/QH14".
_TITLED_TYPES = ("Bộ luật", "Luật", "Pháp lệnh")
# Types a short back-reference ("Quyết định 628") may use. Programmes and projects are left
# out: "Chương trình 135" and "Đề án 06" are names in their own right, not back-references.
SHORT_TYPES: frozenset[str] = frozenset(
    {
        "Thông tư liên tịch", "Thông tư", "Nghị định", "Nghị quyết", "Quyết định", "Chỉ thị",
        "Kết luận", "Kế hoạch", "Công văn", "Thông báo", "Hướng dẫn", "Quy định", "Công điện",
    }
)  # fmt: skip
# A generic type word yields to the type the issuer code names: "Văn bản số 44/NQ-CP" is a
# Nghị quyết.
_GENERIC_TYPES = frozenset({"Văn bản"})

# The type abbreviation that opens an issuer code, and the type it names. A number with a
# code opening with one of these is a citation even without a type word ("theo số
# 628/QĐ-TTg"). QD/ND/CD are the same codes typed without đ.
TYPE_ABBREVIATIONS: dict[str, str] = {
    "QĐ": "Quyết định", "QĐi": "Quy định", "NQ": "Nghị quyết", "NQLT": "Nghị quyết liên tịch",
    "NĐ": "Nghị định", "TT": "Thông tư", "TTLT": "Thông tư liên tịch", "CT": "Chỉ thị",
    "KL": "Kết luận", "KH": "Kế hoạch", "KHLT": "Kế hoạch liên tịch", "TB": "Thông báo",
    "HD": "Hướng dẫn", "CĐ": "Công điện", "TTr": "Tờ trình", "BC": "Báo cáo",
    "CTr": "Chương trình", "QC": "Quy chế", "ĐA": "Đề án", "L": "Lệnh", "QH": "Luật",
    "UBTVQH": "Pháp lệnh",
}  # fmt: skip
_ABBREVIATION_SPELLINGS = {"QD": "QĐ", "QDi": "QĐi", "ND": "NĐ", "CD": "CĐ"}

# Characters that stand in for others in real texts, replaced one for one (offsets hold) in
# the copy the patterns run on: Ð (U+00D0, Icelandic eth) for Đ, and dashes for the hyphen.
_LOOKALIKE = re.compile("[\u00d0\u00f0\u2010-\u2014\u2212\u2215]")
_LOOKALIKES = str.maketrans(
    {"\u00d0": "\u0110", "\u00f0": "\u0111", "\u2010": "-", "\u2011": "-", "\u2012": "-",
     "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2215": "/"}
)  # fmt: skip


def _spellings(phrase: str) -> list[str]:
    """The casings a type word is written in: "quyết định", "Quyết định", "Quyết Định",
    "QUYẾT ĐỊNH" (case-insensitive matching is slower, and would also take "qUYẾT")."""
    lower = phrase.lower()
    return [lower, lower[0].upper() + lower[1:], lower.title(), lower.upper()]


def _trie(phrases: Sequence[str]) -> str:
    """One pattern for many phrases, as a trie: a position that cannot start one fails on
    its first character, which is what keeps the scan fast. A space matches any spaces."""
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for phrase in phrases:
        node = root
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:  # type: ignore[type-arg]
        branches = [
            (r"\s+" if char == " " else re.escape(char)) + emit(child)
            for char, child in node.items()
            if char
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        if "" in node:  # a phrase ends here, and a longer one goes on: prefer the longer
            return f"(?:{body})?"
        return body

    return f"(?:{emit(root)})"


_SEG = r"[A-ZĐ][A-Za-zĐđ]{0,11}\d{0,2}"  # one part of an issuer code: QĐ, TTg, BGDĐT, QH14
_ABBR = (
    r"(?:TTLT|TTr|TT|QĐi|QDi|QĐ|QD|NQLT|NQ|NĐ|ND|CTr|CT|KL|KHLT|KH|TB|HD|CĐ|CD|BC|QC|ĐA|L"
    r"|UBTVQH\d{0,2}|QH\d{0,2})(?![A-Za-zĐđ\d])"
)
_TITLED = _trie([s for t in _TITLED_TYPES for s in _spellings(t)])
_TYPES = _trie([s for t in DOC_TYPES for s in _spellings(t)])
_DATE = (
    r"(?:\s*,)?\s+(?i:ngày)\s+(?P<dd>\d{1,2})(?:"
    r"\s?(?P<sep>[/.-])\s?(?P<mm>\d{1,2})\s?(?P=sep)\s?(?P<yy>\d{4})"
    r"|\s+(?i:tháng)\s+(?P<mm2>\d{1,2}),?\s+(?i:năm)\s+(?P<yy2>\d{4}))(?!\d)"
)
# "Quyết định 1258/QĐ-UBND năm 2021": the year, read but left out of the mention.
_YEAR_AFTER = r"(?=\s+(?i:năm)\s+(?P<ny>(?:19|20)\d\d)(?!\d))"
# "số 628", "số628", and "số: 628" as document headers write it.
_SO = r"(?i:số)\s*:?\s*"
# A short reference's number is not a quantity ("Kế hoạch 5 năm", "Quyết định 2,5 triệu"),
# nor the start of a code cut off by markup ("Nghị quyết số 29-<i>NQ/TW</i>").
_NOT_QUANTITY = (
    r"(?!\s?[/%]|[.,:]\d|-|\s+ngày(?!\s+\d)|\s+(?:năm|tháng|giờ|phút|người|lần|điểm|triệu|"
    r"tỷ|nghìn|ngàn|đồng|km|ha|m|kg|tấn|bước|nội\s+dung|nhiệm\s+vụ|giải\s+pháp)(?!\w))"
)
_CITATION = re.compile(
    rf"""
    (?<!\w)
    (?:
        (?P<titled>{_TITLED})(?P<title>(?:\s+[^\W\d_]+,?){{1,8}}?)\s+{_SO}
      | (?P<type>{_TYPES})(?:\s+{_SO}|\s*)
    )?
    (?P<num>\d{{1,6}})
    (?:
        \s?/\s?(?:(?P<year>(?:19|20)\d\d)\s?/\s?)?
        (?P<code>(?(type){_SEG}|(?(titled){_SEG}|{_ABBR}))(?:\s?-\s?{_SEG}(?:-{_SEG}){{0,3}})?)
        (?!\w)
      | -(?P<dabbr>{_ABBR})/(?P<diss>{_SEG}(?:-{_SEG}){{0,2}})(?!\w)
      | (?(type)(?!\w){_NOT_QUANTITY}|(?!))(?P<short>)
    )
    (?:(?(short)(?!)|(?:{_DATE}|{_YEAR_AFTER})))?
    """,
    re.VERBOSE,
)
_FIRST_DIGIT = re.compile(r"\d")
_SPACES = re.compile(r"\s+")
_YEARLIKE = re.compile(r"(?:19|20)\d\d")


@dataclass(frozen=True, slots=True)
class _Short:
    doc_type: str
    number: str


def _number(written: str) -> str:
    return str(int(written))  # "05" and "5" are the same document


def _valid_date(day: str, month: str, year: str) -> date | None:
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def _scan(text: str) -> Iterator[tuple[int, int, Document | _Short]]:
    """Full citations and short references in NFC `text`, as found, unresolved."""
    if _FIRST_DIGIT.search(text) is None:  # most text nodes: nothing to cite
        return
    # str.translate walks every character in Python: most texts have no lookalike at all.
    search = text.translate(_LOOKALIKES) if _LOOKALIKE.search(text) else text
    for m in _CITATION.finditer(search):
        written_type = m["type"] or m["titled"]
        doc_type = _TYPE_BY_FOLDED[" ".join(written_type.lower().split())] if written_type else None
        if m["code"] is None and m["diss"] is None:
            # A short reference: a type word and a number, written as a name is written.
            if doc_type in SHORT_TYPES and written_type[0].isupper() and written_type[1:].islower():
                yield m.start(), m.end(), _Short(doc_type, _number(m["num"]))
            continue
        start, title = m.start(), m["title"]
        abbr_type = _abbreviated_type(m)
        if (
            written_type
            and written_type[0].islower()
            and abbr_type not in (None, doc_type)
            and doc_type not in _GENERIC_TYPES
        ):
            # A lowercase type word the code contradicts is prose ("Thông báo kết luận số
            # 123-TB/TU" is a thông báo): the mention starts at the number.
            start, doc_type, title = m.start("num"), None, None
        yield start, _citation_end(m), _document(m, doc_type or abbr_type or "Văn bản", title)


def _citation_end(m: re.Match[str]) -> int:
    if m["dd"] is not None and _date_of(m) is None:  # "ngày 31/02/2020" is no date
        return m.end("code") if m["code"] is not None else m.end("diss")
    return m.end()


def _date_of(m: re.Match[str]) -> date | None:
    if m["dd"] is None:
        return None
    if m["mm"] is not None:
        return _valid_date(m["dd"], m["mm"], m["yy"])
    return _valid_date(m["dd"], m["mm2"], m["yy2"])


def _abbreviated_type(m: re.Match[str]) -> str | None:
    """The type the issuer code's first part names: QĐ → Quyết định, QH14 → Luật."""
    first = m["dabbr"] if m["code"] is None else m["code"].split("-", 1)[0].rstrip()
    first = _ABBREVIATION_SPELLINGS.get(first, first).rstrip("0123456789")
    return TYPE_ABBREVIATIONS.get(first)


def _document(m: re.Match[str], doc_type: str, title: str | None) -> Document:
    if m["code"] is not None:
        parts = _SPACES.sub("", m["code"]).split("-")  # "QĐ - TTg" is typed loosely
        parts[0] = _ABBREVIATION_SPELLINGS.get(parts[0], parts[0])
        issuer = "-".join(parts)
        year_part = f"{m['year']}/" if m["year"] else ""
        written = f"{m['num']}/{year_part}{issuer}"
    else:
        abbr = _ABBREVIATION_SPELLINGS.get(m["dabbr"], m["dabbr"])
        issuer = f"{abbr}/{m['diss']}"
        written = f"{m['num']}-{issuer}"
    if doc_type in _GENERIC_TYPES:
        doc_type = _abbreviated_type(m) or doc_type
    issued_on = _date_of(m)
    if m["year"]:
        year: int | None = int(m["year"])
    elif issued_on is not None:
        year = issued_on.year
    else:
        year = int(m["ny"]) if m["ny"] else None
    number = _number(m["num"])
    key = f"{_slug(issuer)}-{number}" + (f"-{year}" if year else "")
    title = " ".join(title.split()) if title else ""
    name = f"{doc_type} {title} số {written}" if title else f"{doc_type} số {written}"
    return Document(key, doc_type, number, year, issuer, name, issued_on, written)


@lru_cache(maxsize=4096)
def _slug(issuer: str) -> str:
    # python-slugify costs ~100 µs a call; a site cites a few thousand issuer codes at most.
    return slugify(issuer)


class _Pool:
    """The full citations a text's mentions resolve against: its own and the bulletin's.
    Indexed, so that resolving costs the same however many documents a text cites."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.best: dict[str, Document] = {}  # by key: the first with a date, else the first
        for doc in documents:
            held = self.best.get(doc.key)
            if held is None or (held.issued_on is None and doc.issued_on is not None):
                self.best[doc.key] = doc
        # Code and number → the keys with a year: what an undated citation may be.
        self.dated: dict[tuple[str, str], set[str]] = {}
        for doc in self.best.values():
            if doc.year is not None:
                self.dated.setdefault((_slug(doc.issuer), doc.number), set()).add(doc.key)
        # Type and number → the keys a short reference may abbreviate.
        self.named: dict[tuple[str, str], set[str]] = {}
        for doc in self.best.values():
            key = self.full(doc).key
            self.named.setdefault((doc.doc_type, doc.number), set()).add(key)

    def full(self, doc: Document) -> Document:
        """The pool's version of `doc`; an undated citation whose number has no year is the
        dated one with the same code and number, when exactly one is."""
        if doc.year is None:
            dated = self.dated.get((_slug(doc.issuer), doc.number), set())
            if len(dated) == 1:
                return self.best[next(iter(dated))]
        return self.best.get(doc.key, doc)

    def short(self, ref: _Short) -> Document | None:
        """The one full citation a short reference can abbreviate, or None."""
        fits = self.named.get((ref.doc_type, ref.number), set())
        return self.best[next(iter(fits))] if len(fits) == 1 else None


def find_mentions(text: str, known: Sequence[Document] = ()) -> list[Mention]:
    """Every mention in `text`, in order, non-overlapping. Short references resolve against
    the full citations in `text` and `known` (the rest of the bulletin)."""
    text = unicodedata.normalize("NFC", text)
    found = list(_scan(text))
    if not found:
        return []
    pool = _Pool([*(f for _, _, f in found if isinstance(f, Document)), *known])
    mentions = []
    for start, end, f in found:
        if isinstance(f, Document):
            mentions.append(Mention(start, end, pool.full(f), True))
        else:
            resolved = pool.short(f)
            # "Kế hoạch 2024" is the plan for a year, unless a full citation says otherwise.
            if resolved is not None or not _YEARLIKE.fullmatch(f.number):
                mentions.append(Mention(start, end, resolved, False))
    return mentions


# Between a bulletin's texts: no pattern crosses it (it is neither a space nor a word).
_TEXT_SEPARATOR = "\n|\n"


def extract(*texts: str | None) -> list[Document]:
    """The documents cited in full in the texts (a bulletin's title, lead and body as plain
    text), each once, in order of first mention. A document cited twice with and without its
    date keeps the date. Short references add nothing."""
    joined = _TEXT_SEPARATOR.join(t for t in texts if t)
    documents: dict[str, Document] = {}
    for mention in find_mentions(joined):
        if mention.full and mention.document is not None:
            documents.setdefault(mention.document.key, mention.document)
    return list(documents.values())


def extract_bulletin(title: str, summary: str | None, body_html: str) -> list[Document]:
    """`extract` over a bulletin as stored: its title, lead and sanitised HTML body (read as
    the plain text a reader sees, shared.excerpt.plain_text)."""
    return extract(title, summary, plain_text(body_html))


# A sanitised fragment, as nh3 writes it, is tags and text, with "<" and ">" escaped in both
# text and attribute values (and no comments): a tag runs from "<" to the next ">". Not
# knowing quotes keeps the scan linear on any input; a stray "<" is read as text.
_MARKUP = re.compile(r"<[^<>]*>")
_A_OPEN = re.compile(r"<a(?![\w-])", re.IGNORECASE)
_A_CLOSE = re.compile(r"</a\s*>", re.IGNORECASE)


def _linked(
    text: str, documents: Sequence[Document], href: Callable[[Document], str]
) -> str | None:
    """Escaped HTML for NFC plain `text` with its mentions of `documents` linked; None when
    it has none."""
    keys = {d.key for d in documents}
    mentions = [
        m
        for m in find_mentions(text, documents)
        if m.document is not None and m.document.key in keys
    ]
    if not mentions:
        return None
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    at = 0
    for m in mentions:
        assert m.document is not None
        out.append(escape(text[at : m.start]))
        out.append(
            Markup('<a class="citation" href="{}">{}</a>').format(
                href(m.document), text[m.start : m.end]
            )
        )
        at = m.end
    out.append(escape(text[at:]))
    return "".join(out)


def linkify_html(html: str, documents: Sequence[Document], href: Callable[[Document], str]) -> str:
    """A sanitised HTML fragment with each mention of one of `documents` (full, or a short
    reference that resolves to one) wrapped in ``<a class="citation" href="...">``. Text
    already inside a link is left alone; mentions of documents not in `documents` too.

    Each text node is read on its own: a citation split by markup ("Quyết định số
    <b>628/QĐ-TTg</b>") is not linked. A text node with a link is written back NFC."""
    if not documents:
        return html
    out: list[str] = []
    depth = 0  # how many <a> elements the current text is inside
    at = 0
    for tag in _MARKUP.finditer(html):
        out.append(_text_node(html[at : tag.start()], depth, documents, href))
        markup = tag.group()
        if _A_OPEN.match(markup) and not markup.endswith("/>"):
            depth += 1
        elif _A_CLOSE.match(markup):
            depth = max(depth - 1, 0)
        out.append(markup)
        at = tag.end()
    out.append(_text_node(html[at:], depth, documents, href))
    return "".join(out)


def _text_node(
    raw: str, depth: int, documents: Sequence[Document], href: Callable[[Document], str]
) -> str:
    if depth or not raw or _FIRST_DIGIT.search(raw) is None:
        return raw
    linked = _linked(unescape(raw), documents, href)
    return raw if linked is None else linked


def linkify_text(text: str, documents: Sequence[Document], href: Callable[[Document], str]) -> str:
    """Plain text as escaped HTML, with the same links as `linkify_html`."""
    linked = _linked(text, documents, href) if documents else None
    return str(escape(unicodedata.normalize("NFC", text))) if linked is None else linked
