"""Security headers on every answer: the gateway's (pages, feeds, 304, errors) and the ingest
API's (JSON, its 413, the docs pages), from the one source in shared/security_headers.py. And
the pages themselves hold nothing the strict CSP would refuse (inline script, style, handlers).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from services.gateway.app import create_app, static_version
from services.ingest.app import create_app as create_ingest_app
from services.render.pages import STATIC_VERSION, PageRenderer
from shared.db import create_schema
from shared.models import Agency, Bulletin
from shared.security_headers import (
    API_HEADERS,
    DOCS_HEADERS,
    SITE_CSP,
    SITE_HEADERS,
    SecurityHeadersMiddleware,
)
from shared.settings import Settings
from shared.site import ALL, tombstone_for
from shared.storage import LocalStorage
from tests.unit.gateway.test_gateway import ARTICLE, Client, RawResponse, call

SITE = {name.lower(): value for name, value in SITE_HEADERS}


def assert_site_headers(header_list: list[tuple[str, str]]) -> None:
    """Each security header exactly once, with the shared value."""
    for name, value in SITE.items():
        values = [v for k, v in header_list if k.lower() == name]
        assert values == [value], (name, values)


@pytest.fixture
def gateway_client(tmp_path: Path) -> Client:
    settings = Settings(data_dir=tmp_path, site_dir=tmp_path / "site")
    storage = LocalStorage(settings.resolved_site_dir)
    storage.put("index.html", ARTICLE)
    storage.put("bac-kan/index.html", ARTICLE)
    storage.put("bac-kan/tin-1.html", ARTICLE)
    storage.put("feeds/all.rss", b"<?xml version='1.0'?><rss version='2.0'></rss>")
    storage.put("feeds/all.atom", b"<?xml version='1.0'?><feed/>")
    storage.put("static/site.css", b"body { color: #222 }\n" * 40)
    storage.put("big.pdf", b"%PDF" + b"0" * 5000)
    storage.put(tombstone_for("/bac-kan/rut-2.html"), b"<!doctype html><title>Gone</title>")
    # max_entry_bytes below big.pdf: that file is streamed, the other code path.
    return Client(create_app(settings, max_entry_bytes=4096))


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/", {}, 200),
        ("GET", "/bac-kan/tin-1.html", {}, 200),
        ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "gzip"}, 200),
        ("HEAD", "/bac-kan/tin-1.html", {}, 200),
        ("GET", "/feeds/all.rss", {}, 200),
        ("GET", "/feeds/all.atom", {}, 200),
        ("GET", "/static/site.css", {}, 200),
        ("GET", "/big.pdf", {}, 200),  # streamed from disk
        ("GET", "/bac-kan", {}, 301),
        ("GET", "/khong-co.html", {}, 404),
        ("GET", "/bac-kan/rut-2.html", {}, 410),
        ("POST", "/", {}, 405),
        ("GET", "/healthz", {}, 200),
    ],
)
def test_every_gateway_answer_carries_the_security_headers(
    gateway_client: Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = gateway_client.request(method, path, headers)
    assert response.status_code == status
    assert_site_headers(list(response.headers.multi_items()))


@pytest.mark.parametrize("path", ["/bac-kan/tin-1.html", "/feeds/all.rss", "/big.pdf"])
def test_a_304_carries_them_too(gateway_client: Client, path: str) -> None:
    etag = gateway_client.get(path).headers["etag"]
    response = gateway_client.get(path, {"If-None-Match": etag})
    assert response.status_code == 304
    assert_site_headers(list(response.headers.multi_items()))


def test_a_server_error_carries_them(
    gateway_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = gateway_client.app

    async def broken(scope: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "_handle", broken)
    response: RawResponse = call(app, "/never-cached.html")
    assert response.status == 500
    assert_site_headers(response.header_list)


def test_the_csp_is_strict_where_it_matters() -> None:
    directives = dict(d.split(" ", 1) for d in SITE_CSP.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert directives["style-src"] == "'self'"
    for name in ("object-src", "base-uri", "frame-ancestors", "form-action"):
        assert directives[name] == "'none'", name
    assert "data:" not in SITE_CSP and "unsafe" not in SITE_CSP


class _InlineFinder(HTMLParser):
    """Everything in a page the CSP would refuse or report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refused: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.stylesheets: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.refused.append(f"<{tag} {name}>")
        if tag == "style":
            self.refused.append("<style>")
        if tag == "script":
            self.scripts.append(named)
        if tag == "link" and named.get("rel") == "stylesheet":
            self.stylesheets.append(named.get("href"))
        for name in ("href", "src", "action", "formaction"):
            if (named.get(name) or "").strip().lower().startswith("javascript:"):
                self.refused.append(f"<{tag} {name}=javascript:>")


def inline_report(page: str) -> _InlineFinder:
    finder = _InlineFinder()
    finder.feed(page)
    finder.close()
    return finder


def test_the_404_page_is_styled_by_the_site_stylesheet_only(gateway_client: Client) -> None:
    response = gateway_client.get("/khong-co.html")
    report = inline_report(response.text)
    assert report.refused == [] and report.scripts == []
    # The very URL the rendered pages use, so the browser's cached copy serves the 404 too.
    assert report.stylesheets == [f"/static/site.css?v={STATIC_VERSION}"]
    assert static_version() == STATIC_VERSION


def _bulletin() -> Bulletin:
    when = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    return Bulletin(
        id=3, guid="urn:uuid:0", slug="thong-bao", title="Thông báo", summary="Tóm tắt",
        body_format="html", body_source="<p>x</p>", body_html="<p>Nội dung</p>",
        author="Tác giả", category="Giáo dục", category_slug="giao-duc", language="vi",
        published_at=when, updated_at=when, revision=2,
        agency=Agency(id=1, slug="bac-kan", name="UBND tỉnh Bắc Kạn"),
    )  # fmt: skip


def test_rendered_pages_hold_nothing_the_csp_refuses(tmp_path: Path) -> None:
    renderer = PageRenderer(Settings(public_url="https://bantin.example", data_dir=tmp_path))
    bulletin = _bulletin()
    pages = {
        "article": renderer.article(bulletin),
        "withdrawn": renderer.withdrawn(bulletin),
        "listing": renderer.listing(ALL, "Bản tin", [bulletin]),
    }
    for kind, page in pages.items():
        report = inline_report(page)
        assert report.refused == [], kind
        for script in report.scripts:
            # A file from our own origin, or a data block the browser never runs.
            src = script.get("src") or ""
            data_block = script.get("type") == "application/ld+json"
            assert src.startswith("/static/") or data_block, (kind, script)
    sources = [script.get("src") or "" for script in inline_report(pages["article"]).scripts]
    assert any(src.startswith("/static/site.js?v=") for src in sources)


# -- the ingest API ----------------------------------------------------------------------------

API = {name.lower(): value for name, value in API_HEADERS}
DOCS = {name.lower(): value for name, value in DOCS_HEADERS}


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, redis_url="memory://", max_request_bytes=1000)
    create_schema(settings)
    with TestClient(create_ingest_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/healthz", 200, API),
        ("GET", "/v1/bulletins/1", 401, API),
        ("GET", "/khong-co", 404, API),
        ("POST", "/v1/bulletins", 413, API),  # the body limit's own answer
        ("GET", "/openapi.json", 200, API),
        ("GET", "/docs", 200, DOCS),
        ("GET", "/redoc", 200, DOCS),
    ],
)
def test_every_ingest_answer_carries_its_headers(
    ingest: TestClient, method: str, path: str, status: int, expected: dict[str, str]
) -> None:
    content = b"{" + b" " * 2000 + b"}" if method == "POST" else None
    response = ingest.request(method, path, content=content)
    assert response.status_code == status, response.text
    for name, value in expected.items():
        assert response.headers.get_list(name) == [value], name


def test_docs_load_only_from_ingest_itself_and_nothing_else_may_load() -> None:
    assert "http" not in DOCS["content-security-policy"]  # no CDN: the docs work offline
    assert "script-src 'self'" in DOCS["content-security-policy"]
    assert "script-src" not in API["content-security-policy"]
    assert API["content-security-policy"].startswith("default-src 'none'")


def test_the_middleware_keeps_a_header_the_app_set() -> None:
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"cache-control", b"max-age=5"), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def record(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    middleware = SecurityHeadersMiddleware(app)
    asyncio.run(middleware({"type": "http", "path": "/v1/x"}, receive, record))
    headers = [(k.decode(), v.decode()) for k, v in sent[0]["headers"]]
    assert [v for k, v in headers if k == "cache-control"] == ["max-age=5"]
    assert dict(headers)["content-security-policy"] == API["content-security-policy"]
    assert json.loads(sent[1]["body"]) == {}
