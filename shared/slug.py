"""URL slugs that read right for Vietnamese: `Kế hoạch` → `ke-hoach`, `Đà Nẵng` → `da-nang`."""

from __future__ import annotations

import unicodedata

from slugify import slugify as _slugify
from text_unidecode import unidecode

MAX_SLUG_LENGTH = 80
FALLBACK_SLUG = "ban-tin"


def slugify(text: str, *, max_length: int = MAX_SLUG_LENGTH, fallback: str = FALLBACK_SLUG) -> str:
    """Transliterate to lowercase ASCII words joined by hyphens, cut at a word boundary.

    NFC first so that decomposed input (NFD, as macOS produces) gives the same slug.
    python-slugify transliterates with text-unidecode, which maps đ/Đ to d.
    """
    normalised = unicodedata.normalize("NFC", text)
    slug = _slugify(normalised, max_length=max_length, word_boundary=True, save_order=True)
    return slug or fallback


def fold(text: str) -> str:
    """Text folded for diacritic-insensitive search: `Kế hoạch  số 5` → `ke hoach so 5`.

    Transliterated as slugify does (text-unidecode: đ → d), lowercased, whitespace runs made
    one space; punctuation is kept, so a folded query matches the folded title as typed.
    """
    normalised = unicodedata.normalize("NFC", text)
    return " ".join(unidecode(normalised).lower().split())
