"""The web console through deploy/nginx.conf: its pages and assets carry the console's own
security headers (shared/security_headers.py CONSOLE_HEADERS), each exactly once, and the
API beside it keeps the API's. Runs the real nginx, gateway and ingest of
tests/unit/gateway/test_nginx_front.py (its fixtures); skips without nginx."""

from __future__ import annotations

import pytest

from bench import gateway as harness
from shared.security_headers import API_HEADERS, CONSOLE_HEADERS
from tests.unit.gateway.test_nginx_front import (  # noqa: F401 (fixtures)
    assert_once,
    fetch,
    ingest_ports,
    ports,
    site,
)

pytestmark = pytest.mark.skipif(
    harness._nginx() is None, reason="nginx is not installed (apt-get install nginx-light)"
)

CONSOLE = {name.lower(): value for name, value in CONSOLE_HEADERS}
API = {name.lower(): value for name, value in API_HEADERS}
# Pages say no-store (ingest's, passed through); the versioned assets may be kept a day.
ASSET = {k: v for k, v in CONSOLE.items() if k != "cache-control"}


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/console", 303, CONSOLE),
        ("/console/", 303, CONSOLE),
        ("/console/sign-in", 200, CONSOLE),
        ("/console/khong-co", 404, CONSOLE),
        ("/console/static/console.css", 200, ASSET),
        ("/console/static/site/site.js", 200, ASSET),
        ("/v1/bulletins/1", 401, API),
    ],
)
def test_console_answers_carry_its_own_headers_once_through_nginx(
    ports: tuple[int, int],  # noqa: F811
    ingest_ports: tuple[int, int],  # noqa: F811
    path: str,
    status: int,
    expected: dict[str, str],
) -> None:
    got, headers, body = fetch(ingest_ports[1], "GET", path)
    assert got == status, body[:300]
    assert_once(expected)
    if path.startswith("/console/static/"):
        assert headers["cache-control"] == "public, max-age=86400"
    elif path.startswith("/console") and status != 303:
        assert headers["content-type"].startswith("text/html")


def test_a_refused_console_form_is_an_html_page_with_the_console_headers(
    ports: tuple[int, int],  # noqa: F811
    ingest_ports: tuple[int, int],  # noqa: F811
) -> None:
    """A form without its token: ingest's 403 page, no Retry-After added by nginx."""
    got, headers, _ = fetch(ingest_ports[1], "POST", "/console/sign-in",
                            headers={"Content-Type": "application/x-www-form-urlencoded"},
                            body=b"email=a%40b.vn&password=x")  # fmt: skip
    assert got == 403 and headers["content-type"].startswith("text/html")
    assert_once(CONSOLE)
    assert "retry-after" not in headers
