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

Input may be NFC or NFD: it is NFC-normalised first, and every offset is into the NFC text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date


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


def find_mentions(text: str, known: Sequence[Document] = ()) -> list[Mention]:
    """Every mention in `text`, in order, non-overlapping. Short references resolve against
    the full citations in `text` and `known` (the rest of the bulletin)."""
    raise NotImplementedError


def extract(*texts: str | None) -> list[Document]:
    """The documents cited in full in the texts (a bulletin's title, lead and body as plain
    text), each once, in order of first mention. A document cited twice with and without its
    date keeps the date. Short references add nothing."""
    raise NotImplementedError


def extract_bulletin(title: str, summary: str | None, body_html: str) -> list[Document]:
    """`extract` over a bulletin as stored: its title, lead and sanitised HTML body (read as
    the plain text a reader sees, shared.excerpt.plain_text)."""
    raise NotImplementedError


def linkify_html(html: str, documents: Sequence[Document], href: Callable[[Document], str]) -> str:
    """A sanitised HTML fragment with each mention of one of `documents` (full, or a short
    reference that resolves to one) wrapped in ``<a class="citation" href="...">``. Text
    already inside a link is left alone; mentions of documents not in `documents` too."""
    raise NotImplementedError


def linkify_text(text: str, documents: Sequence[Document], href: Callable[[Document], str]) -> str:
    """Plain text as escaped HTML, with the same links as `linkify_html`."""
    raise NotImplementedError
