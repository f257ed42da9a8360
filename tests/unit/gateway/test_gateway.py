"""The public read side: file serving, validators, gzip, safety and the cache."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.types import Message

from services.gateway import app as gateway_app
from services.gateway import files as gateway_files
from services.gateway.app import Gateway, create_app
from shared.settings import Settings
from shared.site import TOMBSTONE_DIR, file_for, tombstone_for
from shared.storage import LocalStorage

# Large and repetitive enough to be gzipped (well above the ~500-byte threshold).
ARTICLE = (
    "<!doctype html><html lang=vi><title>Thông báo</title><p>"
    + "Ủy ban nhân dân tỉnh Bắc Kạn thông báo lịch tiếp công dân. " * 60
    + "</p></html>"
).encode()
SMALL = b"<!doctype html><title>ok</title>"
JSON_FEED = json.dumps(
    {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Bắc Kạn",
        "items": [{"id": str(i), "content_html": "<p>Lịch tiếp công dân.</p>"} for i in range(20)],
    },
    ensure_ascii=False,
).encode()
IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, site_dir=tmp_path / "site")


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    settings.resolved_site_dir.mkdir(parents=True)
    store = LocalStorage(settings.resolved_site_dir)
    store.put("index.html", ARTICLE)
    store.put("bac-kan/index.html", b"<!doctype html><title>Bac Kan</title>")
    store.put("bac-kan/lich-tiep-cong-dan-12.html", ARTICLE.replace(b"</title>", b" 12</title>"))
    store.put("feeds/all.rss", b"<?xml version='1.0'?><rss version='2.0'></rss>")
    store.put("feeds/agency/bac-kan.atom", b"<?xml version='1.0'?><feed></feed>")
    store.put("feeds/agency/bac-kan.json", JSON_FEED)
    store.put("static/site.css", b"body { color: #222 }\n" * 40)
    return store


@pytest.fixture
def app(settings: Settings, storage: LocalStorage) -> Gateway:
    return create_app(settings)


class Client:
    """A synchronous face on ``httpx.AsyncClient`` + ``ASGITransport`` (no server, no threads).

    httpx sends percent-encoded paths as given and the transport decodes them as uvicorn does,
    so ``%2e%2e`` and ``%2f`` reach the app as ``..`` and ``/``.
    """

    def __init__(self, app: Gateway) -> None:
        self.app = app

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                return await http.request(method, url, headers=headers)

        return asyncio.run(send())

    def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", url, headers)

    def head(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("HEAD", url, headers)


@pytest.fixture
def client(app: Gateway) -> Client:
    return Client(app)


class RawResponse:
    def __init__(self, messages: list[Message]) -> None:
        start = messages[0]
        assert start["type"] == "http.response.start"
        self.status: int = start["status"]
        self.header_list = [(k.decode(), v.decode()) for k, v in start["headers"]]
        self.headers = dict(self.header_list)
        self.body = b"".join(m.get("body", b"") for m in messages[1:])


def call(
    app: Gateway,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: bytes = b"",
) -> RawResponse:
    """Drive the ASGI app with a scope as uvicorn builds it: the path already percent-decoded.

    HTTP clients normalise ``..`` away before sending; calling the app directly is the only way
    to be sure what the gateway does with the decoded paths uvicorn can hand it.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    return RawResponse(messages)


# --- URL layout -------------------------------------------------------------------------------


def test_root_serves_index_html(client: Client) -> None:
    response = client.get("/", headers=IDENTITY)
    assert response.status_code == 200
    assert response.content == ARTICLE
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(ARTICLE))


def test_agency_index_and_article(client: Client) -> None:
    agency = client.get("/bac-kan/")
    assert agency.status_code == 200
    assert agency.content == b"<!doctype html><title>Bac Kan</title>"
    article = client.get("/bac-kan/lich-tiep-cong-dan-12.html")
    assert article.status_code == 200
    assert "<title>Thông báo 12</title>" in article.text


def test_query_string_is_ignored_for_lookup(client: Client) -> None:
    response = client.get("/static/site.css?v=abc123")
    assert response.status_code == 200
    assert response.text.startswith("body {")


def test_directory_without_slash_redirects(client: Client, storage: LocalStorage) -> None:
    response = client.get("/bac-kan")
    assert response.status_code == 301
    assert response.headers["location"] == "/bac-kan/"
    with_query = client.get("/bac-kan?page=2")
    assert with_query.headers["location"] == "/bac-kan/?page=2"


def test_directory_without_index_is_not_listed(client: Client, settings: Settings) -> None:
    (settings.resolved_site_dir / "empty").mkdir()
    (settings.resolved_site_dir / "empty" / "file.html").write_bytes(SMALL)
    for path in ("/empty", "/empty/", "/feeds/", "/feeds"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"file.html" not in response.content
        assert b"all.rss" not in response.content


def test_vietnamese_path_segments(client: Client, storage: LocalStorage) -> None:
    storage.put("chuyen-muc/giáo-dục/index.html", "<p>Giáo dục</p>".encode())
    storage.put("chuyen-muc/giáo-dục/thông-báo-7.html", SMALL)
    encoded = "/chuyen-muc/gi%C3%A1o-d%E1%BB%A5c/"
    assert client.get(encoded).text == "<p>Giáo dục</p>"
    assert client.get(encoded + "th%C3%B4ng-b%C3%A1o-7.html").content == SMALL
    redirect = client.get(encoded.rstrip("/"))
    assert redirect.status_code == 301
    assert redirect.headers["location"] == encoded
    # An invalid UTF-8 sequence decodes to U+FFFD in uvicorn: a clean 404, not an error.
    assert client.get("/chuyen-muc/%C3%28/").status_code == 404


# --- Content types and caching headers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("page.html", "text/html; charset=utf-8"),
        ("PAGE.HTML", "text/html; charset=utf-8"),
        ("feeds/x.rss", "application/rss+xml; charset=utf-8"),
        ("feeds/x.atom", "application/atom+xml; charset=utf-8"),
        ("feeds/all.json", "application/feed+json; charset=utf-8"),
        ("feeds/category/giao-duc.JSON", "application/feed+json; charset=utf-8"),
        ("static/feeds/x.json", "application/json"),  # only the feed worker's files
        ("static/a.css", "text/css; charset=utf-8"),
        ("static/a.js", "text/javascript; charset=utf-8"),
        ("static/logo.png", "image/png"),
        ("static/photo.jpg", "image/jpeg"),
        ("static/logo.svg", "image/svg+xml"),
        ("static/favicon.ico", "image/x-icon"),
        ("data.json", "application/json"),
        ("sitemap.xml", "application/xml; charset=utf-8"),
        ("sitemaps/2020-07.xml", "application/xml; charset=utf-8"),
        ("robots.txt", "text/plain; charset=utf-8"),
        ("feeds.opml", "text/x-opml; charset=utf-8"),
        ("feeds/atom.opml", "text/x-opml; charset=utf-8"),
        ("archive.tar.zst", "application/octet-stream"),
        ("no-suffix", "application/octet-stream"),
    ],
)
def test_content_types(client: Client, storage: LocalStorage, name: str, content_type: str) -> None:
    storage.put(name, b"x")
    response = client.get("/" + name)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "cache_control"),
    [
        ("/", "public, max-age=30"),
        ("/bac-kan/lich-tiep-cong-dan-12.html", "public, max-age=30"),
        ("/feeds/all.rss", "public, max-age=60"),
        ("/feeds/agency/bac-kan.atom", "public, max-age=60"),
        ("/feeds/agency/bac-kan.json", "public, max-age=60"),
        ("/static/site.css", "public, max-age=86400"),
    ],
)
def test_cache_control(client: Client, path: str, cache_control: str) -> None:
    assert client.get(path).headers["cache-control"] == cache_control


def test_json_feed_is_gzipped_and_revalidated_like_the_other_feeds(app: Gateway) -> None:
    plain = call(app, "/feeds/agency/bac-kan.json", headers=IDENTITY)
    packed = call(app, "/feeds/agency/bac-kan.json", headers=GZIP)
    assert plain.body == JSON_FEED
    assert gzip.decompress(packed.body) == JSON_FEED
    for response in (plain, packed):
        assert response.headers["content-type"] == "application/feed+json; charset=utf-8"
        assert response.headers["vary"] == "accept-encoding"
    assert packed.headers["etag"] == plain.headers["etag"][:-1] + '-gz"'
    again = call(
        app, "/feeds/agency/bac-kan.json", headers={**GZIP, "If-None-Match": packed.headers["etag"]}
    )
    assert (again.status, again.body) == (304, b"")


def test_last_modified_is_file_mtime(client: Client, settings: Settings) -> None:
    os.utime(settings.resolved_site_dir / "index.html", (1_700_000_000, 1_700_000_000.7))
    response = client.get("/")
    assert response.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert response.headers["last-modified"] == formatdate(1_700_000_000, usegmt=True)


# --- ETag and conditional GET -------------------------------------------------------------------


def test_etag_is_strong_content_derived_and_stable(
    client: Client, settings: Settings, storage: LocalStorage
) -> None:
    etag = client.get("/", headers=IDENTITY).headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert client.get("/", headers=IDENTITY).headers["etag"] == etag
    # Content-derived: another process (another worker) computes the same tag.
    other = Client(create_app(settings))
    assert other.get("/", headers=IDENTITY).headers["etag"] == etag
    # Same bytes re-rendered: same tag, so readers keep getting 304.
    storage.put("index.html", ARTICLE)
    assert client.get("/", headers=IDENTITY).headers["etag"] == etag


def test_etag_changes_after_rewrite(client: Client, storage: LocalStorage) -> None:
    first = client.get("/feeds/all.rss")
    storage.put("feeds/all.rss", b"<?xml version='1.0'?><rss version='2.0'><channel/></rss>")
    second = client.get("/feeds/all.rss")
    assert second.content.endswith(b"<channel/></rss>")
    assert second.headers["etag"] != first.headers["etag"]
    stale = client.get("/feeds/all.rss", headers={"If-None-Match": first.headers["etag"]})
    assert stale.status_code == 200


def _assert_not_modified(response: Any, etag: str) -> None:
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == etag
    assert "last-modified" in response.headers
    assert response.headers["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize(
    "if_none_match",
    [
        "{etag}",
        "W/{etag}",
        '"other", {etag}',
        '"other",W/{etag} , "third"',
        "*",
    ],
)
def test_if_none_match_gives_304(client: Client, if_none_match: str) -> None:
    etag = client.get("/feeds/all.rss").headers["etag"]
    response = client.get(
        "/feeds/all.rss", headers={"If-None-Match": if_none_match.format(etag=etag)}
    )
    _assert_not_modified(response, etag)


def test_if_none_match_mismatch_gives_200(client: Client) -> None:
    etag = client.get("/feeds/all.rss").headers["etag"]
    for value in ('"nope"', 'W/"nope", "also-nope"', etag[1:-1], ""):
        response = client.get("/feeds/all.rss", headers={"If-None-Match": value})
        assert response.status_code == 200, value
        assert response.content.startswith(b"<?xml")


def test_if_none_match_repeated_header_lines(app: Gateway) -> None:
    etag = call(app, "/feeds/all.rss").headers["etag"]
    # Two header lines are one list (RFC 9110 5.3): build the scope by hand to repeat the name.
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/feeds/all.rss",
        "query_string": b"",
        "headers": [(b"if-none-match", b'"a"'), (b"if-none-match", etag.encode())],
    }
    asyncio.run(app(scope, receive, send))
    assert RawResponse(messages).status == 304


def test_if_modified_since(client: Client, settings: Settings) -> None:
    os.utime(settings.resolved_site_dir / "feeds" / "all.rss", (1_700_000_000, 1_700_000_000))
    last_modified = client.get("/feeds/all.rss").headers["last-modified"]
    etag = client.get("/feeds/all.rss").headers["etag"]
    exact = client.get("/feeds/all.rss", headers={"If-Modified-Since": last_modified})
    _assert_not_modified(exact, etag)
    later = formatdate(1_700_000_500, usegmt=True)
    assert client.get("/feeds/all.rss", headers={"If-Modified-Since": later}).status_code == 304
    earlier = formatdate(1_699_999_999, usegmt=True)
    assert client.get("/feeds/all.rss", headers={"If-Modified-Since": earlier}).status_code == 200
    for bad in ("yesterday", "", formatdate(4_000_000_000, usegmt=True)):  # junk, future
        assert client.get("/feeds/all.rss", headers={"If-Modified-Since": bad}).status_code == 200


def test_if_modified_since_ignored_when_if_none_match_present(client: Client) -> None:
    last_modified = client.get("/feeds/all.rss").headers["last-modified"]
    response = client.get(
        "/feeds/all.rss", headers={"If-None-Match": '"stale"', "If-Modified-Since": last_modified}
    )
    assert response.status_code == 200
    assert response.content.startswith(b"<?xml")


# --- gzip ----------------------------------------------------------------------------------------


def test_gzip_round_trip(app: Gateway) -> None:
    response = call(app, "/", headers=GZIP)
    assert response.status == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "accept-encoding"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert int(response.headers["content-length"]) == len(response.body) < len(ARTICLE)
    assert gzip.decompress(response.body) == ARTICLE


def test_gzip_variant_has_its_own_etag_and_304(app: Gateway) -> None:
    plain = call(app, "/", headers=IDENTITY)
    packed = call(app, "/", headers=GZIP)
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "accept-encoding"  # the response does vary
    assert packed.headers["etag"] != plain.headers["etag"]
    assert packed.headers["etag"].endswith('-gz"')
    not_modified = call(app, "/", headers={**GZIP, "If-None-Match": packed.headers["etag"]})
    assert not_modified.status == 304
    assert not_modified.body == b""
    assert not_modified.headers["etag"] == packed.headers["etag"]
    assert not_modified.headers["vary"] == "accept-encoding"
    identity_304 = call(app, "/", headers={**IDENTITY, "If-None-Match": plain.headers["etag"]})
    assert identity_304.status == 304
    assert identity_304.headers["etag"] == plain.headers["etag"]
    # A tag validates only its own encoding: a cache holding identity bytes must not be told
    # they are current for a gzip response, and the other way round.
    crossed = call(app, "/", headers={**GZIP, "If-None-Match": plain.headers["etag"]})
    assert crossed.status == 200
    assert crossed.headers["content-encoding"] == "gzip"


def test_real_client_decodes_gzip(client: Client) -> None:
    response = client.get("/", headers={"Accept-Encoding": "gzip, deflate"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == ARTICLE


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("GZIP", True),
        ("*", True),
        ("gzip;q=0", False),
        ("*, gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("deflate, br", False),
    ],
)
def test_accept_encoding_negotiation(app: Gateway, accept_encoding: str, gzipped: bool) -> None:
    response = call(app, "/", headers={"Accept-Encoding": accept_encoding})
    assert ("content-encoding" in response.headers) is gzipped
    body = gzip.decompress(response.body) if gzipped else response.body
    assert body == ARTICLE


def test_small_and_binary_files_are_not_gzipped(app: Gateway, storage: LocalStorage) -> None:
    storage.put("small.html", SMALL)
    storage.put("static/logo.png", os.urandom(4000))
    for path in ("/small.html", "/static/logo.png"):
        response = call(app, path, headers=GZIP)
        assert "content-encoding" not in response.headers, path
        assert "vary" not in response.headers, path


def test_gzip_computed_once_per_file_version(
    app: Gateway, storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_compress = gzip.compress

    def counting_compress(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        calls.append(len(data))
        return real_compress(data, *args, **kwargs)

    # Only the gateway's own calls: storage.put compresses the .gz sibling with the same module.
    monkeypatch.setattr(gateway_files, "gzip", SimpleNamespace(compress=counting_compress))
    for _ in range(5):
        assert call(app, "/", headers=GZIP).headers["content-encoding"] == "gzip"
    assert len(calls) == 1
    storage.put("index.html", ARTICLE + b"<!-- corrected -->")
    for _ in range(3):
        response = call(app, "/", headers=GZIP)
    assert gzip.decompress(response.body).endswith(b"<!-- corrected -->")
    assert len(calls) == 2


# --- Methods --------------------------------------------------------------------------------------


def test_head_sends_headers_without_body(client: Client) -> None:
    get = client.get("/", headers=GZIP)
    head = client.head("/", headers=GZIP)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "last-modified", "content-encoding"):
        assert head.headers[name] == get.headers[name], name
    missing = client.head("/nope.html")
    assert missing.status_code == 404
    assert missing.content == b""


def test_head_raw_body_is_empty(app: Gateway) -> None:
    response = call(app, "/", method="HEAD", headers=IDENTITY)
    assert response.body == b""
    assert response.headers["content-length"] == str(len(ARTICLE))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_get_405(client: Client, method: str) -> None:
    response = client.request(method, "/")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert client.request(method, "/nope").status_code == 405


# --- Safety --------------------------------------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    data = b"TOP SECRET outside the site"
    (tmp_path / "secret.txt").write_bytes(data)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "index.html").write_bytes(data)
    return data


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/static/../../secret.txt",
        "/static/..//..//secret.txt",
        "/./index.html",
        "/bac-kan/./../../secret.txt",
        "/..",
        "/../",
        "/../outside",
        "/../outside/",
        "//etc/passwd",
        "/static//../../secret.txt",
        "/index.html\x00.png",
        "/\x00",
        "/..\\secret.txt",
        "/static/..\\..\\secret.txt",
        "relative/path",
        "",
    ],
)
def test_traversal_never_escapes(app: Gateway, secret: bytes, path: str) -> None:
    response = call(app, path)
    assert response.status == 404, path
    assert secret not in response.body
    assert "Không tìm thấy trang" in response.body.decode()


@pytest.mark.parametrize(
    "url",
    [
        "/%2e%2e/secret.txt",
        "/%2e%2e/",
        "/static/%2f..%2f..%2fsecret.txt",
        "/static/%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/index.html%00.png",
        "/%00",
        "/static/%5c..%5c..%5csecret.txt",
        "/%c0%ae%c0%ae/secret.txt",
    ],
)
def test_encoded_traversal_through_http_client(client: Client, secret: bytes, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (400, 404), url
    assert secret not in response.content


def test_symlinks_out_of_the_site_are_not_followed(
    client: Client, settings: Settings, secret: bytes, tmp_path: Path
) -> None:
    site = settings.resolved_site_dir
    (site / "leak.html").symlink_to(tmp_path / "secret.txt")
    (site / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    (site / "alias.html").symlink_to(site / "bac-kan" / "index.html")
    for path in ("/leak.html", "/escape/", "/escape/index.html", "/escape"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert secret not in response.content
    # A link that stays inside the site is fine.
    assert client.get("/alias.html").content == b"<!doctype html><title>Bac Kan</title>"


def test_dotfiles_are_never_served(
    client: Client, settings: Settings, storage: LocalStorage
) -> None:
    site = settings.resolved_site_dir
    (site / ".tmp-abc123.html").write_bytes(b"half-written")
    (site / "bac-kan" / ".tmp-xyz.html").write_bytes(b"half-written")
    (site / ".git").mkdir()
    (site / ".git" / "config").write_bytes(b"[core]")
    (site / ".well-known").mkdir()
    (site / ".well-known" / "index.html").write_bytes(b"hidden")
    (site / "via-dot.html").symlink_to(site / ".git" / "config")
    for path in (
        "/.tmp-abc123.html",
        "/bac-kan/.tmp-xyz.html",
        "/.git/config",
        "/.git",
        "/.well-known/",
        "/via-dot.html",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"half-written" not in response.content and b"[core]" not in response.content


def test_backslash_paths_are_refused(client: Client, settings: Settings) -> None:
    # A literal backslash is a plain character on Linux, but refusing it keeps the rules the
    # same wherever the site directory lives.
    (settings.resolved_site_dir / "a\\b.html").write_bytes(SMALL)
    assert client.get("/a%5Cb.html").status_code == 404


def test_shared_header_lists_survive_middleware_that_edits_them(app: Gateway) -> None:
    """Starlette middleware edits ``message["headers"]`` in place; the cache must not see it."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def meddling_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"].append((b"x-added", b"1"))

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    for _ in range(3):
        asyncio.run(app(dict(scope), receive, meddling_send))
    assert "x-added" not in call(app, "/").headers


def test_fifo_is_not_opened(client: Client, settings: Settings) -> None:
    # Opening a FIFO would block the worker forever.
    os.mkfifo(settings.resolved_site_dir / "pipe.html")
    assert client.get("/pipe.html").status_code == 404


def test_redirect_cannot_point_off_site(app: Gateway, storage: LocalStorage) -> None:
    response = call(app, "//bac-kan")
    assert response.status == 404
    assert "location" not in response.headers


# --- Error pages ---------------------------------------------------------------------------------


def test_not_found_page(client: Client) -> None:
    response = client.get("/khong-co/trang-nay-99.html")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(response.content))
    assert "Không tìm thấy trang" in response.text
    assert 'href="/"' in response.text
    assert '<html lang="vi">' in response.text


def test_unexpected_error_gives_500_without_traceback(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gateway_app, "load_entry", broken)
    with caplog.at_level(logging.ERROR, logger="services.gateway.app"):
        response = client.get("/bac-kan/lich-tiep-cong-dan-12.html")
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Traceback" not in response.text and "disk on fire" not in response.text
    assert "Lỗi máy chủ" in response.text
    assert any("disk on fire" in (r.exc_text or "") for r in caplog.records)


# --- Health --------------------------------------------------------------------------------------


def test_healthz_ok(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert client.head("/healthz").status_code == 200


def test_healthz_without_site_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, site_dir=tmp_path / "never-rendered")
    response = Client(create_app(settings)).get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = json.loads(response.content)
    assert problem["type"] == "about:blank"
    assert problem["status"] == 503
    assert problem["title"] and problem["detail"]


# --- Cache ---------------------------------------------------------------------------------------


def test_replaced_file_is_served_at_once(client: Client, storage: LocalStorage) -> None:
    for version in range(5):
        body = f"<p>phiên bản {version}</p>".encode()
        storage.put("bac-kan/lich-tiep-cong-dan-12.html", body)
        assert client.get("/bac-kan/lich-tiep-cong-dan-12.html").content == body


def test_replacement_with_same_size_and_mtime_is_noticed(
    client: Client, settings: Settings, storage: LocalStorage
) -> None:
    # Two renders inside one clock tick, same length: only the inode tells them apart.
    target = settings.resolved_site_dir / "bac-kan" / "same.html"
    storage.put("bac-kan/same.html", b"A" * 100)
    before = target.stat()
    assert client.get("/bac-kan/same.html").content == b"A" * 100
    storage.put("bac-kan/same.html", b"B" * 100)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_ino != before.st_ino
    assert client.get("/bac-kan/same.html").content == b"B" * 100


def test_deleted_file_is_gone_at_once(app: Gateway, client: Client, storage: LocalStorage) -> None:
    assert client.get("/feeds/all.rss").status_code == 200
    assert "/feeds/all.rss" in app.cache
    storage.delete("feeds/all.rss")
    assert client.get("/feeds/all.rss").status_code == 404
    assert "/feeds/all.rss" not in app.cache


def test_cache_is_bounded_by_bytes(settings: Settings, storage: LocalStorage) -> None:
    app = create_app(settings, cache_bytes=10_000)
    bodies = {f"static/img{i}.png": os.urandom(3_000) for i in range(10)}
    for name, body in bodies.items():
        storage.put(name, body)
    client = Client(app)
    for _ in range(2):
        for name, body in bodies.items():
            assert client.get("/" + name).content == body
            assert app.cache.total_bytes <= 10_000
    assert 1 <= len(app.cache) <= 3


def test_large_files_are_streamed_not_cached(settings: Settings, storage: LocalStorage) -> None:
    body = os.urandom(200_000)
    storage.put("archive/big.atom", body)
    app = create_app(settings, max_entry_bytes=50_000)
    client = Client(app)
    response = client.get("/archive/big.atom", headers=GZIP)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert "content-encoding" not in response.headers
    assert "/archive/big.atom" not in app.cache
    etag = response.headers["etag"]
    assert client.get("/archive/big.atom", headers={"If-None-Match": etag}).status_code == 304
    last_modified = response.headers["last-modified"]
    since = client.get("/archive/big.atom", headers={"If-Modified-Since": last_modified})
    assert since.status_code == 304 and since.headers["etag"] == etag
    weak_in_list = client.get("/archive/big.atom", headers={"If-None-Match": f'"x", W/{etag}'})
    assert weak_in_list.status_code == 304
    head = client.head("/archive/big.atom")
    assert head.headers["content-length"] == str(len(body))
    # httpx drops a body sent to HEAD: check at the ASGI level that none is read or sent.
    assert call(app, "/archive/big.atom", method="HEAD").body == b""
    storage.put("archive/big.atom", body[::-1])
    changed = client.get("/archive/big.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.content == body[::-1]


def test_files_loaded_off_the_event_loop(
    app: Gateway, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "THREAD_LOAD_BYTES", 100)
    response = client.get("/", headers=IDENTITY)
    assert response.content == ARTICLE
    assert "/" in app.cache


def test_lifespan_and_websocket(app: Gateway) -> None:
    sent: list[Message] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Message:
        return next(incoming)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    asyncio.run(app({"type": "websocket", "path": "/"}, receive, send))
    assert sent[0]["type"] == "websocket.close"


# --- Withdrawn bulletins (410 Gone from a tombstone) ---------------------------------------------

ARTICLE_URL = "/bac-kan/lich-tiep-cong-dan-12.html"
TOMBSTONE = (
    '<!DOCTYPE html>\n<html lang="vi"><head><meta charset="utf-8">'
    '<meta name="robots" content="noindex"><title>Bản tin đã được gỡ bỏ</title></head><body>'
    "<h1>Bản tin đã được gỡ bỏ</h1>"
    + "<p>UBND tỉnh Bắc Kạn đã gỡ bỏ bản tin này. Về trang chủ.</p>" * 20
    + "</body></html>"
).encode()


def withdraw(storage: LocalStorage, url_path: str = ARTICLE_URL) -> None:
    """What the render worker does: delete the page, write its tombstone."""
    storage.delete(file_for(url_path))
    storage.put(tombstone_for(url_path), TOMBSTONE)


def test_tombstone_answers_410_with_the_notice(client: Client, storage: LocalStorage) -> None:
    withdraw(storage)
    response = client.get(ARTICLE_URL, headers=IDENTITY)
    assert response.status_code == 410
    assert response.content == TOMBSTONE
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(TOMBSTONE))
    assert response.headers["cache-control"] == "public, max-age=30"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"].startswith('"')
    assert "last-modified" in response.headers
    # Served again from the cache: the same answer.
    again = client.get(ARTICLE_URL, headers=IDENTITY)
    assert (again.status_code, again.content) == (410, TOMBSTONE)
    assert again.headers["etag"] == response.headers["etag"]


def test_tombstone_is_html_whatever_the_suffix(client: Client, storage: LocalStorage) -> None:
    withdraw(storage, "/feeds/agency/gone.rss")
    response = client.get("/feeds/agency/gone.rss")
    assert response.status_code == 410
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=30"


def test_tombstone_is_gzipped(app: Gateway, storage: LocalStorage) -> None:
    withdraw(storage)
    response = call(app, ARTICLE_URL, headers=GZIP)
    assert response.status == 410
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "accept-encoding"
    assert response.headers["etag"].endswith('-gz"')
    assert gzip.decompress(response.body) == TOMBSTONE


def test_tombstone_etag_never_turns_the_410_into_a_304(app: Gateway, storage: LocalStorage) -> None:
    """RFC 9110 13.2.1: preconditions are ignored when the answer without them is not a 2xx.

    A 304 tells a cache that its stored 200 is still good; the validators are still sent, but
    a matching tag gets the full 410 again (as nginx does for its error answers).
    """
    withdraw(storage)
    first = call(app, ARTICLE_URL, headers=IDENTITY)
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]
    for conditions in (
        {"If-None-Match": etag},
        {"If-None-Match": "*"},
        {"If-Modified-Since": last_modified},
    ):
        response = call(app, ARTICLE_URL, headers={**IDENTITY, **conditions})
        assert response.status == 410, conditions
        assert response.body == TOMBSTONE
        assert response.headers["etag"] == etag


def test_head_on_a_withdrawn_page(app: Gateway, client: Client, storage: LocalStorage) -> None:
    withdraw(storage)
    get = client.get(ARTICLE_URL, headers=GZIP)
    head = client.head(ARTICLE_URL, headers=GZIP)
    assert head.status_code == 410
    assert head.content == b""
    for name in ("content-type", "content-length", "etag", "cache-control", "content-encoding"):
        assert head.headers[name] == get.headers[name], name
    raw = call(app, ARTICLE_URL, method="HEAD", headers=IDENTITY)
    assert (raw.status, raw.body) == (410, b"")
    assert raw.headers["content-length"] == str(len(TOMBSTONE))


def test_withdrawal_flips_a_cached_page_from_200_to_410_at_once(
    app: Gateway, client: Client, storage: LocalStorage
) -> None:
    live = client.get(ARTICLE_URL)
    assert live.status_code == 200
    assert ARTICLE_URL in app.cache
    withdraw(storage)
    gone = client.get(ARTICLE_URL, headers=IDENTITY)
    assert (gone.status_code, gone.content) == (410, TOMBSTONE)
    # A client still holding the live page's tag gets the notice, not a 304.
    stale = client.get(ARTICLE_URL, headers={**IDENTITY, "If-None-Match": live.headers["etag"]})
    assert stale.status_code == 410


def test_tombstone_appearing_after_a_404_is_noticed(client: Client, storage: LocalStorage) -> None:
    url = "/bac-kan/chua-co-99.html"
    assert client.get(url).status_code == 404
    storage.put(tombstone_for(url), TOMBSTONE)
    assert client.get(url).status_code == 410
    storage.delete(tombstone_for(url))
    assert client.get(url).status_code == 404


def test_live_file_wins_over_a_tombstone(
    app: Gateway, client: Client, storage: LocalStorage
) -> None:
    # Both present (re-publication racing the withdrawal's clean-up): the page is served.
    storage.put(tombstone_for(ARTICLE_URL), TOMBSTONE)
    response = client.get(ARTICLE_URL, headers=IDENTITY)
    assert response.status_code == 200
    assert "<title>Thông báo 12</title>" in response.text


def test_republished_page_replaces_a_cached_tombstone_at_once(
    app: Gateway, client: Client, storage: LocalStorage
) -> None:
    withdraw(storage)
    assert client.get(ARTICLE_URL).status_code == 410
    assert ARTICLE_URL in app.cache
    # The page comes back while the tombstone is still there: the live file wins at once.
    storage.put(file_for(ARTICLE_URL), SMALL)
    response = client.get(ARTICLE_URL)
    assert (response.status_code, response.content) == (200, SMALL)
    storage.delete(tombstone_for(ARTICLE_URL))
    assert client.get(ARTICLE_URL).content == SMALL


def test_rewritten_tombstone_is_served_at_once(client: Client, storage: LocalStorage) -> None:
    withdraw(storage)
    first = client.get(ARTICLE_URL, headers=IDENTITY)
    storage.put(tombstone_for(ARTICLE_URL), TOMBSTONE + b"<!-- v2 -->")
    second = client.get(ARTICLE_URL, headers=IDENTITY)
    assert second.status_code == 410
    assert second.content.endswith(b"<!-- v2 -->")
    assert second.headers["etag"] != first.headers["etag"]
    storage.delete(tombstone_for(ARTICLE_URL))
    assert client.get(ARTICLE_URL).status_code == 404


def test_tombstones_are_not_served_under_their_own_url(
    app: Gateway, client: Client, storage: LocalStorage
) -> None:
    withdraw(storage)
    assert client.get(ARTICLE_URL).status_code == 410
    for path in (
        "/.gone/bac-kan/lich-tiep-cong-dan-12.html",
        "/.gone/",
        "/.gone",
        "/%2egone/bac-kan/lich-tiep-cong-dan-12.html",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.content != TOMBSTONE
    raw = call(app, "/.gone/bac-kan/lich-tiep-cong-dan-12.html")
    assert raw.status == 404
    # Nor is a dotfile turned into a 410 through a tombstone of its own.
    storage.put(".gone/.tmp-x.html", TOMBSTONE)
    assert call(app, "/.tmp-x.html").status == 404


def test_tombstone_symlinked_out_of_the_tombstones_is_refused(
    client: Client, settings: Settings, storage: LocalStorage, secret: bytes, tmp_path: Path
) -> None:
    gone = settings.resolved_site_dir / TOMBSTONE_DIR / "bac-kan"
    gone.mkdir(parents=True)
    (gone / "leak-1.html").symlink_to(tmp_path / "secret.txt")
    (gone / "page-2.html").symlink_to(settings.resolved_site_dir / "index.html")
    for path in ("/bac-kan/leak-1.html", "/bac-kan/page-2.html"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert secret not in response.content


def test_large_tombstone_is_streamed_with_410(settings: Settings, storage: LocalStorage) -> None:
    big = TOMBSTONE * 40
    storage.put(tombstone_for("/bac-kan/lon-5.html"), big)
    app = create_app(settings, max_entry_bytes=len(big) // 2)
    response = call(app, "/bac-kan/lon-5.html")
    assert response.status == 410
    assert response.body == big
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=30"
    etag = response.headers["etag"]
    assert call(app, "/bac-kan/lon-5.html", headers={"If-None-Match": etag}).status == 410
    head = call(app, "/bac-kan/lon-5.html", method="HEAD")
    assert (head.status, head.body) == (410, b"")


# --- Revalidation window (production: app_from_env) ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


WINDOW = 0.010


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def windowed(settings: Settings, storage: LocalStorage, clock: FakeClock) -> Gateway:
    app = create_app(settings)
    app.cache = gateway_files.FileCache(app.cache.max_bytes, revalidate_after=WINDOW, clock=clock)
    return app


def test_production_factory_uses_a_short_revalidation_window(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_app, "get_settings", lambda: settings)
    app = gateway_app.app_from_env()
    assert app.cache.revalidate_after == gateway_app.REVALIDATE_AFTER
    # "Within a second", and corrections must show quickly: the window stays far below both.
    assert 0 < gateway_app.REVALIDATE_AFTER <= 0.05
    # Everything else (and every test above) re-checks the file on every request.
    assert create_app(settings).cache.revalidate_after == 0


def test_window_serves_a_checked_file_without_stat(
    windowed: Gateway, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert call(windowed, ARTICLE_URL).status == 200
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(gateway_files.os, "stat", counting_stat)
    for _ in range(100):
        assert call(windowed, ARTICLE_URL).status == 200
    assert stats == []
    clock.now += WINDOW
    assert call(windowed, ARTICLE_URL).status == 200
    assert len(stats) == 1  # one stat per window, however many requests


def test_window_bounds_how_late_a_replaced_file_shows(
    windowed: Gateway, clock: FakeClock, storage: LocalStorage
) -> None:
    storage.put(file_for(ARTICLE_URL), b"<p>v1</p>")
    assert call(windowed, ARTICLE_URL).body == b"<p>v1</p>"
    storage.put(file_for(ARTICLE_URL), b"<p>v2</p>")
    clock.now += WINDOW / 2
    assert call(windowed, ARTICLE_URL).body == b"<p>v1</p>"  # still inside the window
    clock.now += WINDOW / 2
    assert call(windowed, ARTICLE_URL).body == b"<p>v2</p>"  # never later than the window


def test_window_never_delays_a_new_page(windowed: Gateway, storage: LocalStorage) -> None:
    url = "/bac-kan/moi-100.html"
    assert call(windowed, url).status == 404
    storage.put(file_for(url), SMALL)
    assert call(windowed, url).body == SMALL  # not cached before, so looked up at once


def test_window_bounds_withdrawal_and_republication(
    windowed: Gateway, clock: FakeClock, storage: LocalStorage
) -> None:
    assert call(windowed, ARTICLE_URL).status == 200
    withdraw(storage)
    clock.now += WINDOW
    assert call(windowed, ARTICLE_URL).status == 410
    storage.put(file_for(ARTICLE_URL), SMALL)
    clock.now += WINDOW
    assert call(windowed, ARTICLE_URL).body == SMALL


def test_a_gz_sibling_is_no_url_of_its_own(client: Client, storage: LocalStorage) -> None:
    """storage.put wrote index.html.gz beside index.html: it is only index.html's gzip form,
    as nginx treats it (deploy/nginx.conf), never an application/octet-stream download."""
    assert (storage.root / "index.html.gz").is_file()
    response = client.get("/index.html.gz", headers=GZIP)
    assert response.status_code == 404
    assert client.get("/index.html", headers=GZIP).headers["content-encoding"] == "gzip"
