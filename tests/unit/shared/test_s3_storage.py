"""S3Storage against a real S3-compatible server (moto_server on loopback): what each object
carries, the .gz siblings, deletes, and the paths and URLs it refuses."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from shared.filetypes import STATIC_MAX_AGE, TOMBSTONE_MAX_AGE
from shared.settings import Settings
from shared.storage import (
    NOT_MODIFIED,
    Fetched,
    LocalStorage,
    S3Location,
    S3Storage,
    StorageURLError,
    open_storage,
    parse_storage_url,
)

PAGE = ("<!doctype html><p>" + "Thông báo về lịch tiêm chủng. " * 60 + "</p>").encode()


@pytest.fixture
def store(s3_storage_url: str) -> S3Storage:
    return S3Storage.from_url(s3_storage_url)


def head(store: S3Storage, key: str) -> dict[str, Any]:
    answer: dict[str, Any] = store.client.head_object(Bucket=store.location.bucket, Key=key)
    return answer


def keys(store: S3Storage) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=store.location.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_page_and_its_gzip_sibling_carry_type_cache_control_and_encoding(
    store: S3Storage,
) -> None:
    store.put("bac-kan/thong-bao-1/index.html", PAGE)
    page = head(store, "site/bac-kan/thong-bao-1/index.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert page["CacheControl"] == "public, max-age=30"
    assert "ContentEncoding" not in page
    sibling = head(store, "site/bac-kan/thong-bao-1/index.html.gz")
    assert sibling["ContentType"] == "text/html; charset=utf-8"  # the original's type
    assert sibling["ContentEncoding"] == "gzip"
    assert sibling["CacheControl"] == "public, max-age=30"
    body = store.client.get_object(
        Bucket=store.location.bucket, Key="site/bac-kan/thong-bao-1/index.html.gz"
    )["Body"].read()
    assert gzip.decompress(body) == PAGE
    assert store.get("bac-kan/thong-bao-1/index.html") == PAGE
    assert store.exists("bac-kan/thong-bao-1/index.html")


def test_feeds_static_assets_and_tombstones_get_their_own_types(store: S3Storage) -> None:
    store.put("feeds/all.json", b"{}")
    store.put("static/site.css", b"body{}")
    store.put(".gone/bac-kan/rut-lai-2/index.html", b"<p>withdrawn</p>")
    store.put(".gone/feeds/old.rss", b"<p>withdrawn</p>")  # whatever the suffix: the notice
    assert (
        head(store, "site/feeds/all.json")["ContentType"] == "application/feed+json; charset=utf-8"
    )
    css = head(store, "site/static/site.css")
    assert css["CacheControl"] == f"public, max-age={STATIC_MAX_AGE}"
    for key in ("site/.gone/bac-kan/rut-lai-2/index.html", "site/.gone/feeds/old.rss"):
        tombstone = head(store, key)
        assert tombstone["ContentType"] == "text/html; charset=utf-8"
        assert tombstone["CacheControl"] == f"public, max-age={TOMBSTONE_MAX_AGE}"
    # Too small to be worth compressing: no siblings at all.
    assert not any(key.endswith(".gz") for key in keys(store))


def test_a_put_that_no_longer_compresses_removes_the_stale_sibling(store: S3Storage) -> None:
    store.put("index.html", PAGE)
    assert "site/index.html.gz" in keys(store)
    store.put("index.html", b"<p>short</p>")
    assert keys(store) == ["site/index.html"]


def test_delete_removes_the_object_and_its_sibling(store: S3Storage) -> None:
    store.put("a/index.html", PAGE)
    store.delete("a/index.html")
    assert keys(store) == []
    assert store.get("a/index.html") is None
    assert not store.exists("a/index.html")
    store.delete("a/index.html")  # deleting what is gone is fine


def test_fetch_is_conditional_on_the_stores_tag(store: S3Storage) -> None:
    assert store.fetch("index.html") is None
    store.put("index.html", PAGE)
    found = store.fetch("index.html")
    assert isinstance(found, Fetched) and found.body == PAGE and found.last_modified > 0
    assert store.fetch("index.html", found.etag) is NOT_MODIFIED
    store.put("index.html", PAGE + b"<p>corrected</p>")
    again = store.fetch("index.html", found.etag)
    assert isinstance(again, Fetched) and again.body.endswith(b"corrected</p>")


@pytest.mark.parametrize(
    "relative", ["../x.html", "a/../../x.html", "a//b.html", "./x.html", "a/..", ""]
)
def test_paths_that_could_leave_the_prefix_are_refused(store: S3Storage, relative: str) -> None:
    with pytest.raises(ValueError):
        store.put(relative, b"x")
    with pytest.raises(ValueError):
        store.get(relative)
    assert keys(store) == []


def test_a_leading_slash_is_site_relative() -> None:
    assert S3Storage(S3Location("b", "p")).key("/feeds/all.rss") == "p/feeds/all.rss"
    assert S3Storage(S3Location("b", "")).key("feeds/all.rss") == "feeds/all.rss"


def test_storage_urls_are_read_strictly() -> None:
    assert parse_storage_url("s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1") == (
        S3Location("bucket", "a/b", "http://127.0.0.1:9000", "eu-west-1")
    )
    assert parse_storage_url("s3://bucket") == S3Location("bucket", "")
    for bad in (
        "bucket/prefix",
        "http://bucket/prefix",
        "s3:///prefix",
        "s3://user@bucket/p",
        "s3://bucket/a/../b",
        "s3://bucket/p?endpoint=127.0.0.1:9000",
        "s3://bucket/p?endpont=http://127.0.0.1:9000",
        "s3://bucket/p?region=",
        "s3://bucket/p?region=a&region=b",
    ):
        with pytest.raises(StorageURLError, match="BANTIN_STORAGE_URL"):
            parse_storage_url(bad)


def test_open_storage_follows_the_setting(tmp_path: Path, s3_storage_url: str) -> None:
    local = open_storage(Settings(data_dir=tmp_path, storage_url=""))
    assert isinstance(local, LocalStorage)
    remote = open_storage(Settings(data_dir=tmp_path, storage_url=s3_storage_url))
    assert isinstance(remote, S3Storage)
    with pytest.raises(StorageURLError):
        open_storage(Settings(data_dir=tmp_path, storage_url="s3://"))


def test_bantin_up_names_a_bad_url_or_a_bucket_that_does_not_answer(
    tmp_path: Path, s3_storage_url: str
) -> None:
    from services.cli.up import storage_problems

    assert storage_problems(Settings(data_dir=tmp_path)) == []
    assert storage_problems(Settings(data_dir=tmp_path, storage_url=s3_storage_url)) == []
    [typo] = storage_problems(Settings(data_dir=tmp_path, storage_url="s3://b/p?endpont=x"))
    assert "unknown parameter 'endpont'" in typo
    missing = s3_storage_url.replace("s3://bantin-", "s3://gone-", 1)
    [absent] = storage_problems(Settings(data_dir=tmp_path, storage_url=missing))
    assert "does not answer" in absent


def test_exists_many_answers_which_paths_have_objects(store: S3Storage) -> None:
    store.put("a/one.html", PAGE)
    store.put("/b/two.html", b"<p>2</p>")
    present: list[PurePosixPath | str] = [PurePosixPath("a/one.html"), "/b/two.html"]
    absent: list[PurePosixPath | str] = [f"a/missing-{i}.html" for i in range(40)]
    absent.append("a/one.html.gzz")
    # The strings of the paths as given (leading slash kept), whatever their type.
    assert store.exists_many(iter([*absent, *present])) == {"a/one.html", "/b/two.html"}
    assert store.exists_many(["a/one.html"]) == {"a/one.html"}
    assert store.exists_many([]) == set()


def test_exists_many_refuses_a_bad_path_before_asking(store: S3Storage) -> None:
    with pytest.raises(ValueError):
        store.exists_many(["a/one.html", "../x.html"])


def test_exists_many_raises_when_the_bucket_is_gone_or_does_not_answer(
    s3_storage_url: str, moto_server: Any
) -> None:
    # Never "no page exists": the reconciler would re-render the whole site.
    paths = [f"a/{i}.html" for i in range(40)]
    gone = S3Storage.from_url(s3_storage_url.replace("s3://bantin-", "s3://gone-", 1))
    with pytest.raises(ClientError):
        gone.exists_many(paths)
    with pytest.raises(ClientError):  # one path too: a pass may have a single row to check
        gone.exists_many(paths[:1])
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again before the HEADs: nothing listens
    silent = S3Storage(S3Location("bantin", "site", f"http://127.0.0.1:{port}"), attempts=1)
    with pytest.raises(BotoCoreError):
        silent.exists_many(paths)
