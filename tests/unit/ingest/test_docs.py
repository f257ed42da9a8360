"""/docs and /redoc load nothing from another origin: every asset they name is ingest's own,
answers with its type, and the pages' CSP allows no other host."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from services.ingest.docs import ASSETS
from shared.security_headers import DOCS_CSP
from tests.unit.ingest.helpers import assert_problem


class References(HTMLParser):
    """Every URL a page makes the browser fetch: src=, link href=, and ReDoc's spec-url=."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name in ("src", "spec-url") or (tag == "link" and name == "href")):
                self.urls.append(value)

    def script_urls(self, html: str) -> list[str]:
        """URLs in the inline start-up script (Swagger UI's `url:`), as quoted strings."""
        return [part for part in html.split("'") if part.startswith(("/", "http"))]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls + parser.script_urls(html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_reference_only_same_origin_urls(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = references(response.text)
    assert any(url.startswith("/docs/static/") for url in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
    assert "cdn" not in response.text and "googleapis" not in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_every_asset_the_pages_name_answers_with_its_type(client: TestClient, page: str) -> None:
    assets = [u for u in references(client.get(page).text) if u.startswith("/docs/static/")]
    assert assets
    for url in assets:
        response = client.get(url)
        assert response.status_code == 200, url
        name = urlsplit(url).path.rsplit("/", 1)[1]
        assert response.headers["content-type"] == ASSETS[name]
        assert len(response.content) > 1000  # the real bundle, not an error page
        assert response.headers["cache-control"] == "public, max-age=86400"


def test_only_the_listed_assets_are_served(client: TestClient) -> None:
    assert_problem(client.get("/docs/static/__init__.py"), 404)
    assert_problem(client.get("/docs/static/..%2fcore.py"), 404)
    assert client.get("/docs/static/swagger-ui.css").status_code == 200


def test_the_docs_csp_names_no_other_host() -> None:
    assert "http" not in DOCS_CSP
    assert "default-src 'none'" in DOCS_CSP
    assert "script-src 'self' 'unsafe-inline'" in DOCS_CSP


def test_the_docs_are_not_operations_of_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc", "/metrics"))]
