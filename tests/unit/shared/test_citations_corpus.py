"""Precision and recall of citation extraction over the labelled corpus.

tests/data/citations/corpus.json holds sentences written as official bulletins phrase them,
near-misses that must not match, short back-references, and the real sample bulletin. A
mention counts as found only when its case, span and key all agree (a short reference nothing
resolves has the key None). Run alone to see the figures:

    .venv/bin/pytest -q -s tests/unit/shared/test_citations_corpus.py
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from shared import citations

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / "tests" / "data" / "citations" / "corpus.json"

Labelled = tuple[str, int, int, str | None]  # case id, start, end, key


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    return cases


def _text(case: dict[str, Any]) -> str:
    if "file" in case:
        return (REPO / case["file"]).read_text(encoding="utf-8")
    text: str = case["text"]
    return unicodedata.normalize(case.get("form", "NFC"), text)


def _expected(case: dict[str, Any]) -> set[Labelled]:
    """The labels as spans: each label's text is looked for after the previous one's end."""
    text = unicodedata.normalize("NFC", _text(case))
    spans: set[Labelled] = set()
    at = 0
    for label in case["mentions"]:
        start = text.find(label["text"], at)
        for _ in range(label.get("occurrence", 1) - 1):  # "Kế hoạch 5" after "Kế hoạch 5 năm"
            start = text.find(label["text"], start + 1)
        assert start >= 0, f"{case['id']}: label {label['text']!r} not in the text after {at}"
        at = start + len(label["text"])
        spans.add((case["id"], start, at, label["key"]))
    return spans


def _found(case: dict[str, Any]) -> set[Labelled]:
    known = citations.extract(*case.get("known", ()))
    return {
        (case["id"], m.start, m.end, m.document.key if m.document else None)
        for m in citations.find_mentions(_text(case), known)
    }


def test_corpus_is_big_enough() -> None:
    cases = _cases()
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    full = [m for c in cases if "file" not in c for m in c["mentions"] if m["key"]]
    near_misses = [c for c in cases if not c["mentions"]]
    short_unresolved = [m for c in cases for m in c["mentions"] if m["key"] is None]
    assert len(full) >= 60
    assert len(near_misses) >= 30
    assert len(short_unresolved) >= 3
    assert any(c.get("form") == "NFD" for c in cases)
    assert any(c.get("known") for c in cases)


def test_precision_and_recall() -> None:
    expected: set[Labelled] = set()
    found: set[Labelled] = set()
    for case in _cases():
        expected |= _expected(case)
        found |= _found(case)
    assert all(re.fullmatch(r"[a-z0-9-]{1,120}", key) for *_, key in found if key)
    hits = expected & found
    precision = len(hits) / len(found)
    recall = len(hits) / len(expected)
    print(
        f"citations corpus: precision {precision:.3f} recall {recall:.3f} "
        f"over {len(expected)} mentions"
    )
    for miss in sorted(expected - found, key=str):
        print("  missed:", miss)
    for extra in sorted(found - expected, key=str):
        print("  spurious:", extra)
    assert precision >= 0.98
    assert recall >= 0.95


@pytest.mark.parametrize("case", [c for c in _cases() if not c["mentions"]], ids=lambda c: c["id"])
def test_near_misses_find_nothing(case: dict[str, Any]) -> None:
    assert citations.find_mentions(_text(case)) == []
