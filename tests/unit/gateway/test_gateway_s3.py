"""The gateway over an S3-compatible bucket (a real moto server on loopback): the same answers
as over the site directory, and a cache that revalidates against the bucket."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from services.gateway.app import Gateway, create_app
from services.gateway.objects import STALE_IF_ERROR_SECONDS, S3Gateway
from shared.embedded_redis import free_port
from shared.settings import Settings
from shared.storage import LocalStorage, S3Storage
from tests.unit.gateway.test_gateway import ARTICLE, JSON_FEED, Client

PUBLIC = "https://tin.example.gov.vn"
FILES = {
    "index.html": ARTICLE,
    "bac-kan/index.html": b"<!doctype html><title>Bac Kan</title>",
    "bac-kan/lich-12/index.html": ARTICLE.replace(b"</title>", b" 12</title>"),
    "feeds/all.rss": b"<?xml version='1.0'?><rss version='2.0'></rss>" + b" " * 600,
    "feeds/all/2020-01.atom": b"<?xml version='1.0'?><feed></feed>",
    "feeds/agency/bac-kan.json": JSON_FEED,
    "static/site.css": b"body { color: #222 }\n" * 40,
    "logo.png": b"\x89PNG\r\n" + bytes(range(256)) * 4,
    ".gone/bac-kan/rut-lai-3/index.html": b"<!doctype html><p>withdrawn</p>" + b" " * 700,
}
# Every kind of answer: pages, feeds with Link headers, static, binary, 410, 404, redirect.
PATHS = [
    "/", "/bac-kan/", "/bac-kan", "/bac-kan/lich-12/", "/feeds/all.rss", "/feeds/all/2020-01.atom",
    "/feeds/agency/bac-kan.json", "/static/site.css", "/logo.png", "/bac-kan/rut-lai-3/",
    "/missing.html", "/bac-kan/missing/", "/.gone/bac-kan/rut-lai-3/index.html", "/../index.html",
]  # fmt: skip
HEADERS = [{}, {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}]


def settings_for(tmp_path: Path, storage_url: str = "") -> Settings:
    return Settings(
        data_dir=tmp_path, site_dir=tmp_path / "site", public_url=PUBLIC, storage_url=storage_url
    )


@pytest.fixture
def store(s3_storage_url: str) -> S3Storage:
    store = S3Storage.from_url(s3_storage_url)
    for relative, data in FILES.items():
        store.put(relative, data)
    return store


@pytest.fixture
def s3_app(tmp_path: Path, s3_storage_url: str, store: S3Storage) -> S3Gateway:
    app = create_app(settings_for(tmp_path, s3_storage_url))
    assert isinstance(app, S3Gateway)
    return app


@pytest.fixture
def client(s3_app: S3Gateway) -> Client:
    return Client(s3_app)


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    # Last-Modified is the file's mtime on disk and the upload time in the bucket.
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "last-modified"]
    return response.status_code, headers, response.content


def test_every_answer_is_the_local_gateways(tmp_path: Path, s3_app: S3Gateway) -> None:
    local_settings = settings_for(tmp_path / "local")
    local = LocalStorage(local_settings.resolved_site_dir)
    for relative, data in FILES.items():
        local.put(relative, data)
    local_client, s3_client = Client(create_app(local_settings)), Client(s3_app)
    for path in PATHS:
        for headers in HEADERS:
            for method in ("GET", "HEAD"):
                expected = local_client.request(method, path, headers)
                got = s3_client.request(method, path, headers)
                assert comparable(got) == comparable(expected), (method, path, headers)
                if expected.status_code == 200 and method == "GET":
                    tag = {"If-None-Match": got.headers["etag"], **headers}
                    assert s3_client.get(path, tag).status_code == 304
                    since = {"If-Modified-Since": got.headers["last-modified"], **headers}
                    assert s3_client.get(path, since).status_code == 304


def test_a_new_page_and_a_correction_show_at_once(client: Client, store: S3Storage) -> None:
    assert client.get("/bac-kan/moi-13/").status_code == 404
    store.put("bac-kan/moi-13/index.html", b"<p>new</p>")
    assert client.get("/bac-kan/moi-13/").content == b"<p>new</p>"
    store.put("bac-kan/moi-13/index.html", b"<p>corrected</p>")
    assert client.get("/bac-kan/moi-13/").content == b"<p>corrected</p>"


def test_withdrawal_and_republication_flip_a_cached_page(client: Client, store: S3Storage) -> None:
    assert client.get("/bac-kan/lich-12/").status_code == 200
    store.put(".gone/bac-kan/lich-12/index.html", b"<p>withdrawn</p>")
    store.delete("bac-kan/lich-12/index.html")
    gone = client.get("/bac-kan/lich-12/")
    assert gone.status_code == 410 and gone.content == b"<p>withdrawn</p>"
    store.put("bac-kan/lich-12/index.html", b"<p>back</p>")
    assert client.get("/bac-kan/lich-12/").content == b"<p>back</p>"
    store.delete("bac-kan/lich-12/index.html")
    store.put(".gone/bac-kan/lich-12/index.html", b"<p>withdrawn again</p>")
    assert client.get("/bac-kan/lich-12/").content == b"<p>withdrawn again</p>"


def test_within_the_window_a_checked_entry_is_served_without_the_bucket(
    tmp_path: Path, s3_storage_url: str, store: S3Storage
) -> None:
    app = create_app(settings_for(tmp_path, s3_storage_url), revalidate_after=3600)
    client = Client(app)
    first = client.get("/")
    store.put("index.html", b"<p>changed</p>")
    assert client.get("/").content == first.content  # trusted for the window
    assert app.tally.hits == 1 and app.tally.misses == 1
    assert client.get("/fresh.html").status_code == 404  # never cached: looked up each time
    store.put("fresh.html", b"<p>fresh</p>")
    assert client.get("/fresh.html").content == b"<p>fresh</p>"


def test_an_unchanged_entry_is_revalidated_not_read_again(
    client: Client, s3_app: S3Gateway
) -> None:
    assert client.get("/").status_code == 200
    entry = s3_app.cache.stale("/")
    assert entry is not None
    assert client.get("/").status_code == 200
    assert s3_app.cache.stale("/") is entry  # the bucket said 304: same prepared entry
    assert s3_app.tally.hits == 1 and s3_app.tally.misses == 1


def test_concurrent_requests_for_one_url_share_a_lookup(s3_app: S3Gateway) -> None:
    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=s3_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answers = await asyncio.gather(*(http.get("/") for _ in range(20)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * 20
    assert s3_app.tally.misses == 1


def test_large_objects_are_served_but_not_cached(
    tmp_path: Path, s3_storage_url: str, store: S3Storage
) -> None:
    app = create_app(settings_for(tmp_path, s3_storage_url), max_entry_bytes=1000)
    response = Client(app).get("/")
    assert response.status_code == 200 and response.content == ARTICLE
    assert len(app.cache) == 0


def test_health_says_whether_the_bucket_answers(client: Client, store: S3Storage) -> None:
    assert client.get("/healthz").status_code == 200
    missing = S3Storage(dataclasses.replace(store.location, bucket="no-such-bucket-here"))
    answer = Client(S3Gateway(missing)).get("/healthz")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"


def test_the_local_gateway_is_still_what_serves_without_a_storage_url(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    assert type(app) is Gateway


def dead_store(store: S3Storage) -> S3Storage:
    """The same bucket behind an endpoint where nothing listens, tried once per request."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    return S3Storage(dataclasses.replace(store.location, endpoint=endpoint), attempts=1)


def test_an_unreachable_bucket_is_a_503_and_a_cached_page_is_still_served(
    client: Client, s3_app: S3Gateway, store: S3Storage
) -> None:
    assert client.get("/").status_code == 200
    s3_app.store = dead_store(store)
    assert client.get("/").content == ARTICLE  # the last good copy, unchecked
    missing = client.get("/bac-kan/lich-12/")
    assert missing.status_code == 503
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["retry-after"] == "5"
    assert client.get("/healthz").status_code == 503


def test_a_missing_bucket_is_a_503_not_a_404(store: S3Storage) -> None:
    gone = S3Storage(dataclasses.replace(store.location, bucket="no-such-bucket-here"))
    assert Client(S3Gateway(gone)).get("/").status_code == 503


def test_a_cached_page_is_served_unchecked_only_for_a_bounded_time(
    client: Client, s3_app: S3Gateway, store: S3Storage
) -> None:
    """It may have been withdrawn during the outage: past STALE_IF_ERROR_SECONDS without the
    bucket's word, the reader gets a 503, not a page that may no longer be public."""
    now = [1_000.0]
    s3_app.cache._clock = lambda: now[0]
    assert client.get("/").content == ARTICLE
    s3_app.store = dead_store(store)
    now[0] += STALE_IF_ERROR_SECONDS - 1
    assert client.get("/").content == ARTICLE  # unchecked, still within the bound
    now[0] += 2
    assert client.get("/").status_code == 503
    s3_app.store = store
    assert client.get("/").content == ARTICLE  # the bucket is back: read again
