"""LocalStorage's precompressed siblings: ``<file>.gz`` beside every page and feed worth it.

nginx's gzip_static serves the sibling to clients that accept gzip, so it must always hold
the current file's bytes, compressed, and never outlive the file (deploy/nginx.conf refuses
a ``.gz`` without its original too: tests/unit/gateway/test_nginx_front.py).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path, PurePosixPath

import pytest

from shared.filetypes import MIN_GZIP_BYTES, gzip_variant
from shared.site import tombstone_for
from shared.storage import LocalStorage, gz_sibling

PAGE = ("<!doctype html><p>" + "Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân. " * 40).encode()
PAGE_2 = PAGE.replace(b"doctype", b"DOCTYPE") + b"<p>2</p>"
FEED = b"<?xml version='1.0'?><rss><channel>" + b"<item><title>x</title></item>" * 60 + b"</rss>"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "site")


def siblings_without_originals(root: Path) -> list[Path]:
    return [gz for gz in root.rglob("*.gz") if not gz.with_name(gz.name[:-3]).is_file()]


def leftovers(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


@pytest.mark.parametrize(
    ("relative", "data"),
    [
        ("bac-kan/tin-1.html", PAGE),
        ("index.html", PAGE),
        ("feeds/all.rss", FEED),
        ("feeds/agency/bac-kan.atom", FEED),
        ("feeds/all.json", b'{"items": [' + b'{"id": "1", "title": "x"},' * 40 + b"{}]}"),
        ("sitemap.xml", FEED),
        ("static/site.css", b"body { color: #222 }\n" * 40),
        (str(tombstone_for("/bac-kan/rut-3.html")), PAGE),
    ],
)
def test_put_writes_the_gzip_sibling(storage: LocalStorage, relative: str, data: bytes) -> None:
    storage.put(relative, data)
    sibling = storage.path(gz_sibling(PurePosixPath(relative)))
    assert storage.get(relative) == data
    assert sibling.name == Path(relative).name + ".gz"
    compressed = sibling.read_bytes()
    assert gzip.decompress(compressed) == data
    # Deterministic (no timestamp in the header): every writer makes the same bytes.
    assert compressed == gzip_variant(relative, data) == gzip.compress(data, 1, mtime=0)
    assert oct(sibling.stat().st_mode & 0o777) == oct(0o644)  # nginx's workers read it
    assert leftovers(storage.root) == []


@pytest.mark.parametrize(
    ("relative", "data"),
    [
        ("static/logo.png", os.urandom(4000)),  # not a compressible type
        ("nho.html", b"<p>nh\xe1\xbb\x8f</p>"),  # below MIN_GZIP_BYTES
        ("ngau-nhien.html", os.urandom(4000).hex().encode()[:3000]),  # hex: ~0.55, kept
        ("du-lieu.bin", b"\0" * 5000),  # unknown type: never compressed
    ],
)
def test_put_writes_no_sibling_when_not_worth_it(
    storage: LocalStorage, relative: str, data: bytes
) -> None:
    storage.put(relative, data)
    compressed = gzip_variant(relative, data)
    sibling = storage.root / (relative + ".gz")
    assert sibling.exists() == (compressed is not None)
    if compressed is not None:
        assert gzip.decompress(sibling.read_bytes()) == data


def test_a_replaced_file_gets_a_replaced_sibling(storage: LocalStorage) -> None:
    storage.put("bac-kan/tin-1.html", PAGE)
    first = (storage.root / "bac-kan/tin-1.html.gz").stat().st_ino
    storage.put("bac-kan/tin-1.html", PAGE_2)
    sibling = storage.root / "bac-kan/tin-1.html.gz"
    assert gzip.decompress(sibling.read_bytes()) == PAGE_2
    assert sibling.stat().st_ino != first  # renamed into place, never rewritten in place
    assert leftovers(storage.root) == []


def test_the_sibling_goes_when_the_new_content_is_small(storage: LocalStorage) -> None:
    storage.put("bac-kan/tin-1.html", PAGE)
    small = b"<p>ngan</p>"
    assert len(small) < MIN_GZIP_BYTES
    storage.put("bac-kan/tin-1.html", small)
    assert storage.get("bac-kan/tin-1.html") == small
    assert not (storage.root / "bac-kan/tin-1.html.gz").exists()
    storage.put("bac-kan/tin-1.html", PAGE)  # and comes back with content worth it
    assert gzip.decompress((storage.root / "bac-kan/tin-1.html.gz").read_bytes()) == PAGE


def test_delete_removes_the_sibling_with_the_file(storage: LocalStorage) -> None:
    storage.put("bac-kan/tin-1.html", PAGE)
    storage.put("feeds/all.rss", FEED)
    storage.delete("bac-kan/tin-1.html")
    assert not (storage.root / "bac-kan/tin-1.html").exists()
    assert not (storage.root / "bac-kan/tin-1.html.gz").exists()
    assert storage.get("feeds/all.rss") == FEED  # the others stay
    storage.delete("bac-kan/tin-1.html")  # twice: nothing to do, no error
    storage.delete("khong-co/nao.html")


def test_delete_takes_the_sibling_first(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If the process dies between the two unlinks, the file is left without its .gz (served
    # as identity), never a .gz without its file.
    storage.put("bac-kan/tin-1.html", PAGE)
    order: list[str] = []
    unlink = Path.unlink

    def recording(self: Path, missing_ok: bool = False) -> None:
        order.append(self.name)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", recording)
    storage.delete("bac-kan/tin-1.html")
    assert order == ["tin-1.html.gz", "tin-1.html"]


def test_put_writes_the_sibling_before_the_file(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader that finds the new file always finds its matching .gz already there.
    order: list[str] = []
    replace = os.replace

    def recording(source: str, target: os.PathLike[str]) -> None:
        order.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr(os, "replace", recording)
    storage.put("feeds/all.rss", FEED)
    assert order == ["all.rss.gz", "all.rss"]


def test_no_sibling_is_ever_left_without_its_original(storage: LocalStorage) -> None:
    # Any sequence of completed writes, replacements and deletions, tombstones included.
    url = "/bac-kan/rut-3.html"
    steps = [
        lambda: storage.put("bac-kan/rut-3.html", PAGE),
        lambda: storage.put("feeds/all.rss", FEED),
        lambda: storage.put("bac-kan/rut-3.html", b"<p>nho</p>"),
        lambda: storage.put("bac-kan/rut-3.html", PAGE_2),
        lambda: storage.delete("bac-kan/rut-3.html"),
        lambda: storage.put(str(tombstone_for(url)), PAGE),
        lambda: storage.put("bac-kan/rut-3.html", PAGE),  # restored
        lambda: storage.delete(str(tombstone_for(url))),
        lambda: storage.delete("feeds/all.rss"),
        lambda: storage.delete("bac-kan/rut-3.html"),
    ]
    for step in steps:
        step()
        assert siblings_without_originals(storage.root) == []
        for gz in storage.root.rglob("*.gz"):
            original = gz.with_name(gz.name[:-3]).read_bytes()
            assert gzip.decompress(gz.read_bytes()) == original
    assert list(storage.root.rglob("*.gz")) == []


def test_a_failed_write_leaves_no_sibling_of_other_bytes(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put("bac-kan/tin-1.html", PAGE)
    replace = os.replace

    def full_disk(source: str, target: os.PathLike[str]) -> None:
        if not str(target).endswith(".gz"):
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        storage.put("bac-kan/tin-1.html", PAGE_2)
    with pytest.raises(OSError):
        storage.put("bac-kan/moi-2.html", PAGE_2)
    assert siblings_without_originals(storage.root) == []
    assert gzip.decompress((storage.root / "bac-kan/tin-1.html.gz").read_bytes()) == PAGE


def test_exists_many_answers_which_paths_are_files(storage: LocalStorage) -> None:
    storage.put("a/one.html", PAGE)
    storage.put("b/two.html", b"<p>2</p>")
    asked: list[PurePosixPath | str] = [
        PurePosixPath("a/one.html"),
        "/b/two.html",
        "a/missing.html",
        "a",
        "b/two.html.gz",
    ]
    assert storage.exists_many(iter(asked)) == {"a/one.html", "/b/two.html"}
    assert storage.exists_many([]) == set()
    with pytest.raises(ValueError):
        storage.exists_many(["../outside.html"])
