"""deploy/nginx.conf in front of the gateway answers as the gateway alone does.

The production path puts nginx in front (see the file's header). This runs that very file, with
a real nginx and the real gateway behind it, and asks both the same questions. Needs Debian's
``nginx`` (``apt-get install nginx-light``); skips without it.
"""

from __future__ import annotations

import gzip
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import gateway as harness
from shared.site import tombstone_for
from shared.storage import LocalStorage

pytestmark = pytest.mark.skipif(
    harness._nginx() is None, reason="nginx is not installed (apt-get install nginx-light)"
)

PAGE = (
    "<!doctype html><title>Thông báo</title><p>"
    + "Ủy ban nhân dân tỉnh Bắc Kạn thông báo lịch tiếp công dân. " * 60
    + "</p>"
).encode()
FEED = b"<?xml version='1.0'?><rss><channel>" + b"<item><title>x</title></item>" * 80 + b"</rss>"
NOTICE = ("<!doctype html><title>Bản tin đã được gỡ bỏ</title>" + "<p>Đã gỡ.</p>" * 60).encode()
HEADERS = ["content-type", "cache-control", "content-encoding", "location", "allow",
           "x-content-type-options"]  # fmt: skip

Answer = tuple[int, dict[str, str], bytes]


def fetch(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        body = b"x=1" if method == "POST" else None
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        content = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, content
    finally:
        connection.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("front") / "site"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def ports(site: Path) -> Iterator[tuple[int, int]]:
    """(gateway alone, nginx in front of it), both on one site."""
    work = site.parent
    storage = LocalStorage(site)
    storage.put("index.html", PAGE)
    storage.put("bac-kan/index.html", PAGE)
    storage.put("bac-kan/tin-1.html", PAGE)
    storage.put("bac-kan/nen-2.html", PAGE)
    storage.put("feeds/all.rss", FEED)
    storage.put("feeds/all.atom", b"<?xml version='1.0'?><feed/>")
    storage.put("static/site.css", b"body { color: #222 }\n" * 40)
    storage.put("static/logo.png", os.urandom(2000))
    storage.put("nho.html", b"<p>nh\xe1\xbb\x8f</p>")
    storage.put("du-lieu.json", b'{"a": 1}')
    storage.put(tombstone_for("/bac-kan/rut-3.html"), NOTICE)
    storage.put("bac-kan/.tmp-abc", b"half-written")
    (site / "thu-muc-rong").mkdir()
    # A precompressed sibling, as the workers may write one day: nginx serves it itself.
    storage.put("bac-kan/nen-2.html.gz", gzip.compress(PAGE, compresslevel=6, mtime=0))
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's workers must read them
    gateway_port, nginx_port = harness.free_port(), harness.free_port()
    command = [*harness.GATEWAY_FLAGS]
    command[command.index("--workers") + 1] = "1"
    servers = [
        harness.Server("gateway", gateway_port,
                       harness.gateway_starter(work, site, "gateway", gateway_port, command)),
        harness.Server("nginx", nginx_port, harness.nginx_starter(
            work, "nginx", harness._production_conf(site, nginx_port, gateway_port))),
    ]  # fmt: skip
    try:
        for server in servers:
            server.process = server.start()
        for server in servers:
            harness.wait_ready(server, "/")
        yield gateway_port, nginx_port
    finally:
        for server in servers:
            if server.process is not None:
                harness.stop(server.process)


GZ = {"Accept-Encoding": "gzip"}
SAME = [
    ("GET", "/", {}),
    ("GET", "/bac-kan/", {}),
    ("GET", "/bac-kan", {}),  # 301 to the slash, relative, query kept
    ("GET", "/bac-kan?trang=2", {}),
    ("GET", "/bac-kan/tin-1.html", {}),
    ("GET", "/bac-kan/tin-1.html?v=3", {}),
    ("HEAD", "/bac-kan/tin-1.html", {}),
    ("GET", "/bac-kan/tin-1.html", GZ),  # no .gz beside it: the gateway's gzip copy
    ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "gzip;q=0"}),
    ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "br, gzip;q=0.5"}),
    ("GET", "/feeds/all.rss", {}),
    ("GET", "/feeds/all.rss", GZ),
    ("GET", "/feeds/all.atom", {}),
    ("GET", "/static/site.css", {}),
    ("GET", "/static/logo.png", {}),
    ("GET", "/nho.html", {}),
    ("GET", "/du-lieu.json", {}),
    ("GET", "/bac-kan/rut-3.html", {}),  # withdrawn: 410 with the notice
    ("GET", "/bac-kan/rut-3.html", GZ),
    ("HEAD", "/bac-kan/rut-3.html", {}),
    ("GET", "/.gone/bac-kan/rut-3.html", {}),
    ("GET", "/bac-kan/.tmp-abc", {}),
    ("GET", "/khong-co.html", {}),
    ("GET", "/thu-muc-rong/", {}),
    ("GET", "/thu-muc-rong", {}),
    ("GET", "/a\\b", {}),
    ("POST", "/bac-kan/tin-1.html", {}),
    ("DELETE", "/bac-kan/tin-1.html", {}),
    ("OPTIONS", "/", {}),
    ("GET", "/healthz", {}),
]


@pytest.mark.parametrize(("method", "path", "headers"), SAME)
def test_nginx_in_front_answers_as_the_gateway(
    ports: tuple[int, int], method: str, path: str, headers: dict[str, str]
) -> None:
    alone = fetch(ports[0], method, path, headers)
    front = fetch(ports[1], method, path, headers)
    assert front[0] == alone[0]
    assert {h: front[1].get(h) for h in HEADERS} == {h: alone[1].get(h) for h in HEADERS}
    assert front[2] == alone[2]
    if "vary" in alone[1]:
        assert front[1].get("vary", "").lower() == alone[1]["vary"].lower()


@pytest.mark.parametrize("headers", [{}, GZ])
def test_nginx_in_front_revalidates_with_304(
    ports: tuple[int, int], headers: dict[str, str]
) -> None:
    status, answer, _ = fetch(ports[1], "GET", "/bac-kan/tin-1.html", headers)
    assert status == 200
    again = fetch(
        ports[1], "GET", "/bac-kan/tin-1.html", {**headers, "If-None-Match": answer["etag"]}
    )
    assert again[0] == 304
    assert again[1]["cache-control"] == "public, max-age=30"


def test_nginx_serves_a_precompressed_sibling_itself(ports: tuple[int, int]) -> None:
    status, headers, body = fetch(ports[1], "GET", "/bac-kan/nen-2.html", GZ)
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(body) == PAGE
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["vary"].lower() == "accept-encoding"
    # nginx's own tag for the .gz file, not the gateway's "<hash>-gz": it was not asked.
    assert not headers["etag"].endswith('-gz"')
    identity = fetch(ports[1], "GET", "/bac-kan/nen-2.html")
    assert identity[2] == PAGE and identity[1]["etag"] != headers["etag"]


@pytest.mark.parametrize(
    "path", ["/%2e%2e/%2e%2e/etc/passwd", "/bac-kan/..%2f..%2f..%2fetc/passwd"]
)
def test_traversal_is_refused_in_front_too(ports: tuple[int, int], path: str) -> None:
    status, _, body = fetch(ports[1], "GET", path)
    # nginx refuses a path above the root itself, with 400 where the gateway says 404.
    assert status in (400, 404)
    assert b"root:" not in body


def test_changes_show_at_once_in_front(ports: tuple[int, int], site: Path) -> None:
    # nginx keeps no file cache here (no open_file_cache): it opens the file on every request.
    storage = LocalStorage(site)
    url = "/bac-kan/moi-4.html"
    for version in (b"<p>1</p>", b"<p>2</p>"):
        storage.put("bac-kan/moi-4.html", version)
        (site / "bac-kan" / "moi-4.html").chmod(0o644)
        assert fetch(ports[1], "GET", url)[2] == version
    storage.delete("bac-kan/moi-4.html")
    storage.put(tombstone_for(url), NOTICE)
    (site / tombstone_for(url)).chmod(0o644)
    assert fetch(ports[1], "GET", url)[:1] == (410,)
