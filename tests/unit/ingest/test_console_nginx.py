"""The web console through deploy/nginx.conf: its pages and assets carry the console's own
security headers (shared/security_headers.py CONSOLE_HEADERS), each exactly once, and the
API beside it keeps the API's. Runs the real nginx, gateway and ingest of
tests/unit/gateway/test_nginx_front.py (its fixtures); skips without nginx."""

from __future__ import annotations

import http.server
import json
import threading
import time
import unicodedata
from pathlib import Path

import pytest

from bench import gateway as harness
from services.ingest.problems import _console_too_large
from shared.security_headers import API_HEADERS, CONSOLE_HEADERS
from tests.unit.gateway.test_nginx_front import (  # noqa: F401 (fixtures)
    INGEST_LIMIT,
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


# -- nginx's own refusals on /console: pages for a person, not the API's problem+json ----------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def assert_console_error_page(headers: dict[str, str], body: bytes, heading: str) -> None:
    """A short Vietnamese page (lang, title, what happened, what to do), the console's headers."""
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert_once(CONSOLE)  # Cache-Control: no-store and the console's CSP, once each
    page = body.decode()
    assert '<html lang="vi">' in page and f"<title>{heading} – Bantin</title>" in page
    assert f"<h1>{heading}</h1>" in page and 'role="alert"' in page
    assert "quay lại trang trước (nội dung vẫn còn trong trình duyệt)" in page
    assert page == unicodedata.normalize("NFC", page)


def test_a_post_over_the_limit_to_the_console_is_a_vietnamese_page(
    ports: tuple[int, int],  # noqa: F811
    ingest_ports: tuple[int, int],  # noqa: F811
) -> None:
    too_large = b"body=" + b"a" * INGEST_LIMIT
    status, headers, body = fetch(
        ingest_ports[1], "POST", "/console/bulletins/new", FORM, too_large
    )
    assert status == 413
    assert_console_error_page(headers, body, "Nội dung quá dài")
    assert "retry-after" not in headers
    # Word for word the page ingest answers itself, its limit included.
    assert body == _console_too_large(INGEST_LIMIT)
    # The API beside it keeps its problem+json for the same refusal.
    status, headers, body = fetch(ingest_ports[1], "POST", "/v1/bulletins",
                                  {"Content-Type": "application/json"}, too_large)  # fmt: skip
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 413
    assert_once(API)


def test_ingest_down_is_a_vietnamese_page_on_the_console_and_json_on_the_api(
    site: Path,  # noqa: F811
) -> None:
    """Its own nginx, nothing listening where ingest should be (as while ingest restarts)."""
    work = site.parent / "console-ingest-down"
    nginx_port, front, dead = harness.free_port(), harness.free_port(), harness.free_port()
    conf = harness._production_conf(site, nginx_port, harness.free_port(), (front, dead))
    nginx = harness.Server("nginx-console", front, harness.nginx_starter(work, "nginx", conf))
    nginx.process = nginx.start()
    try:
        harness.wait_ready(harness.Server("site", nginx_port, nginx.start, nginx.process), "/")
        posted = b"title=T%C3%AAn"  # a form sent while ingest is down: the same page
        for method, path, form in (("GET", "/console/bulletins", None),
                                   ("POST", "/console/bulletins/new", posted)):  # fmt: skip
            status, headers, body = fetch(front, method, path, FORM if form else None, form)
            assert status == 503, (method, path)
            assert_console_error_page(headers, body, "Hệ thống đang bận hoặc tạm ngừng")
            assert "hãy thử lại sau ít phút" in body.decode()
            assert headers["retry-after"] == "5"
        # An invite link while ingest is down: the same page, and its token in no log of
        # nginx's (the failures above are logged with their request lines).
        token = "Kd9x-Bi_mat-" + "z" * 31
        status, headers, body = fetch(front, "GET", f"/console/invite/{token}")
        assert status == 503
        assert_console_error_page(headers, body, "Hệ thống đang bận hoặc tạm ngừng")
        logs = "".join(path.read_text() for path in (work / "nginx").glob("*.log"))
        assert '"GET /console/bulletins HTTP/1.1"' in logs and token not in logs
        status, headers, body = fetch(front, "GET", "/v1/bulletins/1")
        assert status == 503 and headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 503
        assert_once(API)
        # Past nginx's per-address limit (200/s, bursts of 400): the console's own 429 page.
        for _ in range(3000):  # bounded: about 600 are enough at any speed this machine has
            status, headers, body = fetch(front, "GET", "/console/sign-in")
            if status == 429:
                break
        assert status == 429, "the per-address limit never refused"
        assert_console_error_page(headers, body, "Quá nhiều yêu cầu")
        assert headers["retry-after"] == "1"  # (the API's own 429 is test_nginx_front's)
    finally:
        harness.stop(nginx.process)


def test_the_access_log_format_masks_invite_tokens(
    site: Path,  # noqa: F811
    ports: tuple[int, int],  # noqa: F811
    ingest_ports: tuple[int, int],  # noqa: F811
) -> None:
    """The file's "bantin" log format, turned on as its comment says, in front of the real
    ingest: an invite link's token never reaches the log, however the URL is spelled."""
    work = site.parent / "access-log"
    log = work / "access.log"
    front = harness.free_port()
    conf = harness._production_conf(site, harness.free_port(), ports[0], (front, ingest_ports[0]))
    assert "    access_log off;\n" in conf
    conf = conf.replace("    access_log off;\n", f"    access_log {log} bantin;\n", 1)
    nginx = harness.Server("nginx-log", front, harness.nginx_starter(work, "nginx", conf))
    nginx.process = nginx.start()
    token = "Kd9x-Bi_mat-" + "q" * 31  # shaped as secrets.token_urlsafe(32)
    try:
        harness.wait_ready(nginx, "/healthz")
        # Whatever ingest answers (no such invite here), only the log matters.
        for path in (f"/console/invite/{token}", f"/console/%69nvite/{token}",
                     f"//console/invite/{token}?a=1"):  # fmt: skip
            fetch(front, "GET", path)
        fetch(front, "POST", f"/console/invite/{token}", FORM, b"password=x")
        referer = {"Referer": f"https://api.tin.example/console/invite/{token}"}
        assert (
            fetch(front, "GET", "/console/sign-in?next=%2Fconsole%2Fbulletins", referer)[0] == 200
        )
    finally:
        harness.stop(nginx.process)
    logged = log.read_text()
    assert token not in logged and token[:12] not in logged
    assert logged.count('"GET /console/invite/[masked] HTTP/1.1"') == 3, logged
    assert logged.count('"POST /console/invite/[masked] HTTP/1.1"') == 1
    assert '"[masked: invite]"' in logged and '"-"' in logged  # Referers: that one, none
    # Everything else is logged as it came.
    assert '"GET /console/sign-in?next=%2Fconsole%2Fbulletins HTTP/1.1" 200' in logged


SLOW_SECONDS = 3


class _EchoForwardedFor(http.server.BaseHTTPRequestHandler):
    """Stands where ingest would: answers with the X-Forwarded-For lines it was given."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.endswith("/cham"):  # a stuck ingest: past nginx's read timeout
            time.sleep(SLOW_SECONDS)
        body = json.dumps(self.headers.get_all("X-Forwarded-For") or []).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_ingest_is_told_the_address_nginx_saw_and_a_stuck_one_is_a_page(
    site: Path,  # noqa: F811
) -> None:
    """Compose trusts ingest's private network as proxies (BANTIN_TRUSTED_PROXIES), so the
    sign-in limit per address must never see an X-Forwarded-For the client wrote. A stand-in
    for ingest echoes what it was told, or stays silent past nginx's read timeout."""
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoForwardedFor)
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    work = site.parent / "forwarded-for"
    front = harness.free_port()
    conf = harness._production_conf(
        site, harness.free_port(), harness.free_port(), (front, echo.server_address[1])
    )
    # A shorter wait than the file's 30 s, for the stuck-ingest case below.
    assert "proxy_read_timeout 30s;" in conf
    conf = conf.replace("proxy_read_timeout 30s;", "proxy_read_timeout 1s;")
    nginx = harness.Server("nginx-xff", front, harness.nginx_starter(work, "nginx", conf))
    nginx.process = nginx.start()
    try:
        harness.wait_ready(nginx, "/healthz")
        for path in ("/console/sign-in", "/v1/bulletins/1"):
            for forged in ({}, {"X-Forwarded-For": "203.0.113.7"},
                           {"X-Forwarded-For": "198.51.100.1, 10.0.0.9"}):  # fmt: skip
                status, _, body = fetch(front, "GET", path, forged)
                assert (status, json.loads(body)) == (200, ["127.0.0.1"]), (path, forged)
        # A stuck ingest (nginx's 504): the console's 503 page, the API's problem+json.
        status, headers, body = fetch(front, "GET", "/console/cham")
        assert status == 503
        assert_console_error_page(headers, body, "Hệ thống đang bận hoặc tạm ngừng")
        status, headers, body = fetch(front, "GET", "/v1/cham")
        assert status == 503 and headers["content-type"] == "application/problem+json"
    finally:
        harness.stop(nginx.process)
        echo.shutdown()
        echo.server_close()
