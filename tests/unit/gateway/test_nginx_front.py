"""deploy/nginx.conf in front of the gateway answers as the gateway alone does, and by itself.

A second nginx on the same site with nothing behind it proves that pages, feeds, .gz siblings,
304s, the 404 page and 410 tombstones need no gateway, and that a .gz whose original is gone
is never served. deploy/nginx-s3.conf is checked with ``nginx -t`` and run against a real
moto bucket filled by S3Storage.

The production path puts nginx in front (see the file's header). This runs that very file, with
a real nginx and the real gateway behind it, and asks both the same questions. Needs Debian's
``nginx`` (``apt-get install nginx-light``); skips without it.

The same nginx fronts a real ingest (its own server in the file): reachable through it, bodies
over BANTIN_MAX_REQUEST_BYTES and oversized headers refused by nginx in ingest's problem+json,
and every answer of both carrying the security headers of shared/security_headers.py, once.

The file is rendered as the nginx image renders it (envsubst of BANTIN_PUBLIC_URL and
BANTIN_INGEST_PUBLIC_URL, the gateway's own settings here): the feeds' WebSub Link headers and
the archives' Cache-Control must be the gateway's, whoever serves the file.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import gateway as harness
from services.deliver.topics import hub_url, parse_topic
from services.gateway.app import not_found_page
from services.gateway.files import month_of
from shared.security_headers import API_HEADERS, DOCS_HEADERS, SITE_HEADERS
from shared.settings import Settings
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
# A JSON Feed, large enough to be gzipped.
JSON_FEED = (
    '{"version":"https://jsonfeed.org/version/1.1","title":"Bản tin","items":['
    + ",".join(f'{{"id":"{i}","content_html":"<p>Thông báo {i}.</p>"}}' for i in range(40))
    + "]}"
).encode()
JSON_FEED_TYPE = "application/feed+json; charset=utf-8"
SITEMAP = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<urlset xmlns=\"http://www.sitemaps.org/schemas/"
    b'sitemap/0.9">'
    + b"<url><loc>https://tin.example/bac-kan/tin-1.html</loc></url>" * 20
    + b"</urlset>"
)
OPML = (
    "<?xml version='1.0' encoding='UTF-8'?>\n<opml version=\"2.0\"><body>"
    + '<outline type="rss" text="Sở Y tế" xmlUrl="https://tin.example/feeds/all.rss"/>' * 20
    + "</body></opml>"
).encode()
ERROR_PAGE = ".errors/404.html"
ROBOTS = b"User-agent: *\nAllow: /\n\nSitemap: https://tin.example/sitemap.xml\n"
NOTICE = ("<!doctype html><title>Bản tin đã được gỡ bỏ</title>" + "<p>Đã gỡ.</p>" * 60).encode()
HEADERS = ["content-type", "cache-control", "content-encoding", "location", "allow",
           "x-content-type-options", "link"]  # fmt: skip
# The deployment's URLs, given to the gateway (its settings) and to nginx (envsubst) alike; the
# trailing slash is dropped by both.
URLS = {
    "BANTIN_PUBLIC_URL": "https://tin.example",
    "BANTIN_INGEST_PUBLIC_URL": "https://api.tin.example/",
}
PUBLIC = URLS["BANTIN_PUBLIC_URL"]
HUB = hub_url(Settings(ingest_public_url=URLS["BANTIN_INGEST_PUBLIC_URL"]).resolved_ingest_url)
# Archive documents (RFC 5005): a month long past, and the current UTC month (at import).
PAST_MONTH = "2020-07"
THIS_MONTH = month_of(time.time())[0]
ARCHIVES = [
    f"/feeds/all/{PAST_MONTH}.rss",
    f"/feeds/agency/bac-kan/{PAST_MONTH}-2.atom",
    f"/feeds/category/giao-duc/{THIS_MONTH}.rss",
    f"/feeds/all/{THIS_MONTH}.atom",
]
FEEDS = [f"/feeds/{scope}.{fmt}" for scope in ("all", "agency/bac-kan", "category/giao-duc")
         for fmt in ("rss", "atom", "json")]  # fmt: skip

Answer = tuple[int, dict[str, str], bytes]
# The security headers nginx must pass or add, each exactly once (header name -> value).
SITE = {name.lower(): value for name, value in SITE_HEADERS}
API = {name.lower(): value for name, value in API_HEADERS}
DOCS = {name.lower(): value for name, value in DOCS_HEADERS}
# The last answer's every header line, duplicates kept (the dicts above collapse them).
last_header_lines: list[tuple[str, str]] = []


def fetch(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if body is None and method == "POST":
            body = b"x=1"
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        content = response.read()
        last_header_lines[:] = [(k.lower(), v) for k, v in response.getheaders()]
        return response.status, {k.lower(): v for k, v in response.getheaders()}, content
    finally:
        connection.close()


def assert_once(expected: dict[str, str], lines: list[tuple[str, str]] | None = None) -> None:
    """Each expected header exactly once, with its value (by default in the last answer)."""
    lines = last_header_lines if lines is None else lines
    for name, value in expected.items():
        assert [v for k, v in lines if k == name] == [value], name


def render(conf: str, env: dict[str, str]) -> str:
    """What the nginx image's entrypoint does to a template (20-envsubst-on-templates.sh):
    envsubst of the variables matching NGINX_ENVSUBST_FILTER (here: ours), nothing else."""
    names = " ".join(f"${{{name}}}" for name in env)
    envsubst = shutil.which("envsubst")
    if envsubst is not None:
        done = subprocess.run([envsubst, names], input=conf, env=env, capture_output=True,
                              text=True, check=True, timeout=30)  # fmt: skip
        rendered = done.stdout
    else:  # the same, for these two plain ${NAME} forms
        rendered = conf
        for name, value in env.items():
            rendered = rendered.replace(f"${{{name}}}", value)
    assert "${BANTIN_" not in rendered
    return rendered


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("front") / "site"
    path.mkdir()
    return path


INGEST_LIMIT = Settings().max_request_bytes  # what compose runs: the default, 1 MiB


@pytest.fixture(scope="module")
def ingest_ports(site: Path) -> tuple[int, int]:
    """(ingest alone, nginx's API server in front of it): chosen here, started by ``ports``."""
    return harness.free_port(), harness.free_port()


def ingest_starter(work: Path, port: int) -> harness.Server:
    """A real ingest (SQLite, Kombu's in-memory broker), as compose runs it but for those."""
    data = work / "ingest-data"
    data.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    env |= {"BANTIN_DATA_DIR": str(data), "BANTIN_REDIS_URL": "memory://"}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "services.ingest.app:app_from_env",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
    return harness.Server("ingest", port, lambda: harness._spawn(argv, work / "ingest.log", env))


@pytest.fixture(scope="module")
def ports(site: Path, ingest_ports: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """(gateway alone, nginx in front of it), both on one site; and ingest behind nginx."""
    work = site.parent
    storage = LocalStorage(site)
    storage.put("index.html", PAGE)
    storage.put("bac-kan/index.html", PAGE)
    storage.put("bac-kan/tin-1.html", PAGE)
    storage.put("bac-kan/nen-2.html", PAGE)
    storage.put("feeds/all.rss", FEED)
    storage.put("feeds/all.atom", b"<?xml version='1.0'?><feed/>")
    storage.put("feeds/all.json", JSON_FEED)
    storage.put("feeds/.tmp-x.json", JSON_FEED)
    storage.put("feeds/category/giao-duc.json", JSON_FEED)
    storage.put("feeds/category/giao-duc.json.gz", gzip.compress(JSON_FEED, mtime=0))
    for feed in FEEDS:
        if not storage.exists(feed.lstrip("/")):
            storage.put(feed.lstrip("/"), JSON_FEED if feed.endswith(".json") else FEED)
    for document in ARCHIVES:
        storage.put(document.lstrip("/"), FEED)
    # Look like archives, but are not (a name that is no month; JSON Feed has no archives).
    storage.put("feeds/all/ghi-chu.rss", FEED)
    storage.put("feeds/agency/bac-kan/2020-07.json", JSON_FEED)
    storage.put("static/site.css", b"body { color: #222 }\n" * 40)
    storage.put("sitemap.xml", SITEMAP)
    storage.put("sitemaps/2020-07.xml", SITEMAP)
    storage.put("robots.txt", ROBOTS)
    storage.put("feeds.opml", OPML)
    storage.put("feeds/atom.opml", OPML)
    storage.put("feeds/index.html", PAGE)
    storage.put("static/logo.png", os.urandom(2000))
    storage.put("nho.html", b"<p>nh\xe1\xbb\x8f</p>")
    storage.put("du-lieu.json", b'{"a": 1}')
    storage.put(tombstone_for("/bac-kan/rut-3.html"), NOTICE)
    storage.put("bac-kan/.tmp-abc", b"half-written")
    # The 404 page where nginx looks for it (.errors/404.html), the gateway's very bytes.
    storage.put(ERROR_PAGE, not_found_page())
    (site / "thu-muc-rong").mkdir()
    # Every page and feed above has its precompressed sibling (LocalStorage writes it).
    assert (site / "bac-kan" / "nen-2.html.gz").is_file()
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's workers must read them
    gateway_port, nginx_port = harness.free_port(), harness.free_port()
    command = [*harness.GATEWAY_FLAGS]
    command[command.index("--workers") + 1] = "1"
    ingest_alone, ingest_front = ingest_ports
    conf = harness._production_conf(site, nginx_port, gateway_port, (ingest_front, ingest_alone))
    conf = render(conf, URLS)
    servers: list[harness.Server] = []
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in URLS.items():
                env.setenv(name, value)  # the gateway's settings
            # nginx's month is its local one: UTC, as in the nginx image (see the file).
            env.setenv("TZ", "UTC")
            servers = [
                harness.Server("gateway", gateway_port,
                               harness.gateway_starter(work, site, "gateway", gateway_port,
                                                       command)),
                ingest_starter(work, ingest_alone),
                harness.Server("nginx", nginx_port, harness.nginx_starter(work, "nginx", conf)),
            ]  # fmt: skip
            for server in servers:
                server.process = server.start()
        for server in servers:
            harness.wait_ready(server, "/healthz" if server.name == "ingest" else "/")
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
    ("GET", "/bac-kan/tin-1.html", GZ),  # nginx: the .gz sibling; the gateway: its own gzip
    ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "gzip;q=0"}),
    ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "br, gzip;q=0.5"}),
    ("GET", "/feeds/all.rss", {}),
    ("GET", "/feeds/all.rss", GZ),
    ("GET", "/feeds/all.atom", {}),
    ("GET", "/feeds/all.json", {}),  # JSON Feed's own type, unlike /du-lieu.json below
    ("GET", "/feeds/all.json", GZ),
    ("HEAD", "/feeds/all.json", {}),
    ("GET", "/feeds/.tmp-x.json", {}),  # half-written: refused, whatever its suffix
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
    ("GET", "/sitemap.xml", {}),
    ("GET", "/sitemaps/2020-07.xml", GZ),
    ("GET", "/robots.txt", {}),
    ("GET", "/feeds.opml", {}),
    ("GET", "/feeds/atom.opml", GZ),
    ("GET", "/feeds/", {}),
    *(("GET", path, {}) for path in FEEDS + ARCHIVES),
    *(("GET", path, GZ) for path in ("/feeds/agency/bac-kan.atom", ARCHIVES[0], ARCHIVES[2])),
    *(("HEAD", path, {}) for path in ("/feeds/category/giao-duc.rss", ARCHIVES[1])),
    ("GET", "/feeds/all.rss?hub.mode=x", {}),  # self is the feed's URL, never the query
    ("GET", "/feeds/agency/khong-co.rss", {}),  # no such feed: a 404, no Link
]


@pytest.mark.parametrize(("method", "path", "headers"), SAME)
def test_nginx_in_front_answers_as_the_gateway(
    ports: tuple[int, int], method: str, path: str, headers: dict[str, str]
) -> None:
    alone = fetch(ports[0], method, path, headers)
    assert_once(SITE)
    front = fetch(ports[1], method, path, headers)
    assert_once(SITE)  # nginx's copy, the gateway's hidden: never two
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
    assert_once(SITE)


def test_nginx_serves_a_precompressed_sibling_itself(ports: tuple[int, int]) -> None:
    status, headers, body = fetch(ports[1], "GET", "/bac-kan/nen-2.html", GZ)
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert_once(SITE)
    assert gzip.decompress(body) == PAGE
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["vary"].lower() == "accept-encoding"
    # nginx's own tag for the .gz file, not the gateway's "<hash>-gz": it was not asked.
    assert not headers["etag"].endswith('-gz"')
    identity = fetch(ports[1], "GET", "/bac-kan/nen-2.html")
    assert identity[2] == PAGE and identity[1]["etag"] != headers["etag"]


@pytest.mark.parametrize("headers", [{}, GZ])
def test_nginx_serves_json_feeds_as_application_feed_json(
    ports: tuple[int, int], headers: dict[str, str]
) -> None:
    # From the file itself or from its precompressed sibling, as the gateway types it.
    for path in ("/feeds/all.json", "/feeds/category/giao-duc.json"):
        status, answer, body = fetch(ports[1], "GET", path, headers)
        assert status == 200, path
        assert answer["content-type"] == JSON_FEED_TYPE, path
        assert answer["cache-control"] == "public, max-age=60"
        assert_once(SITE)  # the nested location inherits every security header
        assert (gzip.decompress(body) if headers else body) == JSON_FEED
    # Any other JSON stays plain JSON.
    assert fetch(ports[1], "GET", "/du-lieu.json")[1]["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "content_type", "max_age", "body"),
    [
        ("/sitemap.xml", "application/xml; charset=utf-8", 60, SITEMAP),
        ("/sitemaps/2020-07.xml", "application/xml; charset=utf-8", 60, SITEMAP),
        ("/robots.txt", "text/plain; charset=utf-8", 30, ROBOTS),
        ("/feeds.opml", "text/x-opml; charset=utf-8", 60, OPML),
        ("/feeds/atom.opml", "text/x-opml; charset=utf-8", 60, OPML),
        ("/feeds/", "text/html; charset=utf-8", 30, PAGE),
    ],
)
def test_nginx_serves_sitemaps_robots_and_opml_with_their_types(
    ports: tuple[int, int], path: str, content_type: str, max_age: int, body: bytes
) -> None:
    for port in ports:  # the gateway alone, then nginx in front: the same answer
        status, answer, content = fetch(port, "GET", path)
        assert (status, answer["content-type"], content) == (200, content_type, body), port
        assert answer["cache-control"] == f"public, max-age={max_age}"
        assert_once(SITE)


def links() -> dict[str, str]:
    """The last answer's Link header lines, parsed as httpx parses them: rel -> URL."""
    lines = [("link", v) for k, v in last_header_lines if k == "link"]
    parsed = httpx.Response(200, headers=lines).links
    return {str(rel): link["url"] for rel, link in parsed.items()}


@pytest.mark.parametrize("path", FEEDS)
def test_feeds_name_their_hub_and_themselves(ports: tuple[int, int], path: str) -> None:
    # WebSub discovery (W3C WebSub 4), on the 200, the 304 and HEAD, from the gateway alone,
    # from nginx serving the file and from nginx handing a gzip request to the gateway.
    wanted = {"hub": HUB, "self": PUBLIC + path}
    assert parse_topic(PUBLIC, wanted["self"]) is not None  # a topic the hub accepts
    for port, headers in ((ports[0], {}), (ports[1], {}), (ports[1], GZ)):
        status, answer, _ = fetch(port, "GET", path, headers)
        assert (status, links()) == (200, wanted), (port, headers)
        assert_once(SITE)
        status, _, _ = fetch(port, "GET", path, {**headers, "If-None-Match": answer["etag"]})
        assert (status, links()) == (304, wanted), (port, headers)
        assert fetch(port, "HEAD", path, headers)[0] == 200 and links() == wanted


@pytest.mark.parametrize("path", ARCHIVES)
def test_archives_name_themselves_and_past_months_are_cached_for_a_day(
    ports: tuple[int, int], path: str
) -> None:
    # On a month's first day every archive keeps the minute (ARCHIVE_SETTLE_SECONDS).
    settled = time.gmtime().tm_mday != 1
    max_age = 86400 if PAST_MONTH in path and settled else 60
    for port, headers in ((ports[0], {}), (ports[1], {}), (ports[1], GZ)):
        status, answer, _ = fetch(port, "GET", path, headers)
        assert status == 200
        assert links() == {"self": PUBLIC + path}  # no hub: a closed month has no updates
        assert answer["cache-control"] == f"public, max-age={max_age}", (port, headers)
        status, answer, _ = fetch(port, "GET", path, {**headers, "If-None-Match": answer["etag"]})
        assert status == 304 and links() == {"self": PUBLIC + path}
        assert answer["cache-control"] == f"public, max-age={max_age}", (port, headers)


@pytest.mark.parametrize(
    "path",
    ["/bac-kan/tin-1.html", "/feeds.opml", "/feeds/atom.opml", "/feeds/", "/sitemap.xml",
     "/du-lieu.json", "/feeds/all/ghi-chu.rss", "/feeds/agency/bac-kan/2020-07.json"],
)  # fmt: skip
def test_no_link_on_anything_else(ports: tuple[int, int], path: str) -> None:
    for port in ports:
        fetch(port, "GET", path)
        assert links() == {}, (port, path)


@pytest.mark.parametrize(
    "path", ["/%2e%2e/%2e%2e/etc/passwd", "/bac-kan/..%2f..%2f..%2fetc/passwd"]
)
def test_traversal_is_refused_in_front_too(ports: tuple[int, int], path: str) -> None:
    status, _, body = fetch(ports[1], "GET", path)
    # nginx refuses a path above the root itself, with 400 where the gateway says 404.
    assert status in (400, 404)
    assert b"root:" not in body
    assert_once(SITE)  # nginx's own error page too


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
    assert_once(SITE)


def test_a_too_large_header_is_refused_on_the_site(ports: tuple[int, int]) -> None:
    status, _, _ = fetch(ports[1], "GET", "/", {"X-Big": "a" * 9000})
    assert status == 400  # large_client_header_buffers: 8 KiB a line
    assert_once(SITE)


# -- ingest behind the same nginx ---------------------------------------------------------------


def test_ingest_is_reachable_through_nginx(
    ports: tuple[int, int], ingest_ports: tuple[int, int]
) -> None:
    status, headers, body = fetch(ingest_ports[1], "GET", "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert_once(API)  # nginx's, ingest's own hidden
    assert headers["cache-control"] == "no-store"  # ingest's, passed through
    status, headers, body = fetch(ingest_ports[1], "GET", "/v1/bulletins/1")
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert_once(API)


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_ingest_docs_get_their_own_csp_through_nginx(
    ports: tuple[int, int], ingest_ports: tuple[int, int], path: str
) -> None:
    status, _, body = fetch(ingest_ports[1], "GET", path)
    assert status == 200 and b"/docs/static/" in body and b"cdn" not in body
    assert_once(DOCS)


def raw_request(port: int, request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send bytes as they are (http.client would refuse some of these) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = [line.split(":", 1) for line in lines]
    return int(status_line.split()[1]), [(k.lower(), v.strip()) for k, v in fields], body


def _request(target: bytes, *fields: bytes, method: bytes = b"GET") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: x", b"Connection: close", *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_body_over_the_ingest_limit_is_refused_by_nginx_as_ingest_would(
    ports: tuple[int, int], ingest_ports: tuple[int, int]
) -> None:
    alone, front = ingest_ports
    json_headers = {"Content-Type": "application/json"}
    too_large = b" " * (INGEST_LIMIT + 1)
    status, headers, body = fetch(front, "POST", "/v1/bulletins", json_headers, too_large)
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert_once(API)
    # Word for word what ingest answers itself, so a client sees one API. (Ingest answers as
    # soon as it reads the Content-Length: no body needs to follow, nor could it be sent.)
    own = raw_request(alone, _request(b"/v1/bulletins", b"Content-Length: %d" % len(too_large),
                                      method=b"POST"))  # fmt: skip
    assert own[0] == 413 and json.loads(body) == json.loads(own[2])
    # At the limit the body goes through: ingest itself answers (no key, no valid JSON: a 4xx).
    status, _, body = fetch(front, "POST", "/v1/bulletins", json_headers, too_large[:-1])
    assert status != 413 and json.loads(body)["status"] == status


@pytest.mark.parametrize(
    "request_bytes",
    [
        _request(b"/healthz", b"X-Big: " + b"a" * 9000),  # one line over 8 KiB
        _request(b"/healthz?" + b"a" * 9000),  # the request line over 8 KiB
        _request(b"/healthz", *(b"X-%d: %s" % (i, b"c" * 7000) for i in range(6))),  # > 4 x 8 KiB
    ],
    ids=["header-line", "request-line", "many-headers"],
)
def test_an_oversized_header_is_refused_before_ingest(
    ports: tuple[int, int], ingest_ports: tuple[int, int], request_bytes: bytes
) -> None:
    status, lines, body = raw_request(ingest_ports[1], request_bytes)
    assert status == 431
    assert dict(lines)["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 431
    assert_once(API, lines)


def test_ingest_down_is_a_problem_503_and_the_site_stays_up(
    site: Path, ports: tuple[int, int]
) -> None:
    # Its own nginx, with nothing listening where ingest should be: nginx must still start
    # (ingest is resolved per request) and answer the API's clients in problem+json.
    # `ports` writes the site's files (the home page, the feed): run alone, the test needs
    # them too.
    del ports
    work = site.parent / "ingest-down"
    nginx_port, front, dead = harness.free_port(), harness.free_port(), harness.free_port()
    conf = harness._production_conf(site, nginx_port, harness.free_port(), (front, dead))
    nginx = harness.Server("nginx-alone", front, harness.nginx_starter(work, "nginx", conf))
    nginx.process = nginx.start()
    try:
        harness.wait_ready(harness.Server("site", nginx_port, nginx.start, nginx.process), "/")
        # Not rendered by envsubst, the file still loads: the placeholders show, as said there.
        status, _, _ = fetch(nginx_port, "GET", "/feeds/all.rss")
        assert status == 200
        assert links() == {"hub": "${BANTIN_INGEST_PUBLIC_URL}/hub",
                           "self": "${BANTIN_PUBLIC_URL}/feeds/all.rss"}  # fmt: skip
        status, headers, body = fetch(front, "GET", "/healthz")
        assert status == 503 and headers["content-type"] == "application/problem+json"
        assert json.loads(body)["status"] == 503
        assert headers["retry-after"] == "5"
        assert_once(API)
        # One address sending faster than the API's per-address limit (200/s, bursts of 400)
        # is refused by nginx before any key is looked up, in ingest's language.
        for _ in range(3000):  # bounded: about 600 are enough at any speed this machine has
            status, headers, body = fetch(front, "GET", "/v1/bulletins/1")
            if status == 429:
                break
        assert status == 429, "the per-address limit never refused"
        assert headers["content-type"] == "application/problem+json"
        assert headers["retry-after"] == "1" and json.loads(body)["status"] == 429
        assert_once(API)
    finally:
        harness.stop(nginx.process)


def _nginx_version() -> tuple[int, ...]:
    nginx = harness._nginx()
    assert nginx is not None
    banner = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=True).stderr
    return tuple(int(part) for part in banner.split("/")[1].split()[0].split("."))


def tls_conf(site: Path, tls_dir: Path, ports: dict[str, int]) -> str:
    """deploy/nginx.conf with TLS turned on as its header says (throwaway certificate)."""
    conf = harness._production_conf(site, ports["http"], ports["gateway"],
                                    (harness.free_port(), ports["ingest"]))  # fmt: skip
    lines = [line for line in conf.splitlines() if "# not with TLS" not in line]
    conf = "\n".join(line.replace("# TLS: ", "") for line in lines)
    if _nginx_version() < (1, 25, 1):
        conf = conf.replace("http2 on;", "")  # older nginx (Debian 12's): "listen ... http2"
    for placeholder, value in {
        "listen 443 ssl": f"listen 127.0.0.1:{ports['https']} ssl",
        "listen 8443 ssl": f"listen 127.0.0.1:{ports['api']} ssl",
        "/etc/nginx/tls/": f"{tls_dir}/",
    }.items():
        assert placeholder in conf, placeholder
        conf = conf.replace(placeholder, value)
    return conf


def test_the_documented_tls_termination_works(
    site: Path, ports: tuple[int, int], ingest_ports: tuple[int, int]
) -> None:
    work = site.parent / "tls"
    tls_dir = work / "certs"
    tls_dir.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(tls_dir / "privkey.pem"),
         "-out", str(tls_dir / "fullchain.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    numbers = {name: harness.free_port() for name in ("http", "https", "api")}
    numbers |= {"gateway": ports[0], "ingest": ingest_ports[0]}
    conf = tls_conf(site, tls_dir, numbers)
    nginx = harness.Server("nginx-tls", numbers["http"], harness.nginx_starter(work, "n", conf))
    nginx.process = nginx.start()
    context = ssl.create_default_context(cafile=str(tls_dir / "fullchain.pem"))
    context.check_hostname = False  # a throwaway certificate for "localhost", asked by address

    def https(port: int, path: str) -> Answer:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            content = response.read()
            last_header_lines[:] = [(k.lower(), v) for k, v in response.getheaders()]
            return response.status, dict(last_header_lines), content
        finally:
            connection.close()

    hsts = {"strict-transport-security": "max-age=63072000"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = https(numbers["https"], "/bac-kan/tin-1.html")
                break
            except OSError:
                assert nginx.process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        assert (status, body) == (200, PAGE)
        assert_once(SITE | hsts)
        assert https(numbers["https"], "/khong-co.html")[0] == 404
        assert_once(SITE | hsts)
        status, headers, _ = fetch(numbers["http"], "GET", "/bac-kan/tin-1.html?a=1")
        assert status == 301
        # $host: the name without the port, as on 443 in production.
        assert headers["location"] == "https://127.0.0.1/bac-kan/tin-1.html?a=1"
        assert "strict-transport-security" not in headers  # never over plain http
        status, _, body = https(numbers["api"], "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert_once(API | hsts)
    finally:
        harness.stop(nginx.process)


def test_metrics_are_not_served_through_nginx(
    ports: tuple[int, int], ingest_ports: tuple[int, int]
) -> None:
    """Prometheus scrapes the containers directly; the public never sees the metrics."""
    gateway_port, nginx_port = ports
    status, _, body = fetch(gateway_port, "GET", "/metrics")  # what Prometheus scrapes
    assert status == 200 and b"bantin_gateway_http_requests_total" in body
    status, headers, body = fetch(nginx_port, "GET", "/metrics")
    assert status == 404 and b"bantin_" not in body
    assert headers["content-type"].startswith("text/html")  # the site's own 404 page
    status, _, body = fetch(ingest_ports[0], "GET", "/metrics")
    assert status == 200 and b"bantin_ingest_http_requests_total" in body
    status, headers, body = fetch(ingest_ports[1], "GET", "/metrics")
    assert status == 404 and b"bantin_" not in body
    assert headers["content-type"] == "application/problem+json"
    assert_once(API)


# -- nginx alone: the production read path needs no gateway for files, 304s, 404s and 410s -----


@pytest.fixture(scope="module")
def alone(ports: tuple[int, int], site: Path) -> Iterator[int]:
    """deploy/nginx.conf on the same site with nothing listening where the gateway should be:
    whatever it answers, it answered by itself."""
    work = site.parent / "no-gateway"
    port, dead = harness.free_port(), harness.free_port()
    conf = render(harness._production_conf(site, port, dead), URLS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TZ", "UTC")
        nginx = harness.Server("nginx", port, harness.nginx_starter(work, "nginx", conf))
        nginx.process = nginx.start()
    try:
        harness.wait_ready(nginx, "/")
        yield port
    finally:
        harness.stop(nginx.process)


WITHOUT_GATEWAY = [
    ("GET", "/", {}),
    ("GET", "/bac-kan/", GZ),
    ("GET", "/bac-kan/tin-1.html", {}),
    ("GET", "/bac-kan/tin-1.html", GZ),
    ("HEAD", "/bac-kan/tin-1.html", GZ),
    ("GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "gzip;q=0"}),
    ("GET", "/feeds/all.rss", {}),
    ("GET", "/feeds/all.rss", GZ),
    ("GET", "/feeds/all.atom", GZ),  # too small for a .gz: identity, no Vary
    ("GET", "/feeds/all.json", {}),
    ("GET", "/feeds/all.json", GZ),
    ("GET", ARCHIVES[0], GZ),
    ("GET", "/static/site.css", GZ),
    ("GET", "/static/logo.png", GZ),
    ("GET", "/nho.html", GZ),
    ("GET", "/bac-kan/rut-3.html", {}),  # withdrawn: 410 with the notice
    ("GET", "/bac-kan/rut-3.html", GZ),
    ("HEAD", "/bac-kan/rut-3.html", {}),
    ("GET", "/khong-co.html", {}),
    ("GET", "/khong-co.html", GZ),
    ("GET", "/.gone/bac-kan/rut-3.html", {}),
    ("GET", "/.errors/404.html", {}),
    ("GET", "/bac-kan/.tmp-abc", {}),
    ("GET", "/feeds/.tmp-x.json", {}),
    ("GET", "/feeds/agency/khong-co.rss", GZ),
]


@pytest.mark.parametrize(("method", "path", "headers"), WITHOUT_GATEWAY)
def test_nginx_alone_answers_as_the_gateway(
    ports: tuple[int, int], alone: int, method: str, path: str, headers: dict[str, str]
) -> None:
    expected = fetch(ports[0], method, path, headers)
    front = fetch(alone, method, path, headers)
    assert_once(SITE)
    assert front[0] == expected[0]
    assert {h: front[1].get(h) for h in HEADERS} == {h: expected[1].get(h) for h in HEADERS}
    assert front[1].get("vary", "").lower() == expected[1].get("vary", "").lower()
    assert front[2] == expected[2]
    if front[0] == 200:
        assert "etag" in front[1] and "last-modified" in front[1]
    if front[0] in (404, 410):
        assert "last-modified" not in front[1]


@pytest.mark.parametrize(
    ("path", "headers", "content_type", "max_age"),
    [
        ("/bac-kan/tin-1.html", {}, "text/html; charset=utf-8", 30),
        ("/bac-kan/tin-1.html", GZ, "text/html; charset=utf-8", 30),
        ("/feeds/all.rss", {}, "application/rss+xml; charset=utf-8", 60),
        ("/feeds/all.rss", GZ, "application/rss+xml; charset=utf-8", 60),
        ("/feeds/all.json", GZ, JSON_FEED_TYPE, 60),
    ],
)
def test_nginx_alone_revalidates_on_etag_and_on_if_modified_since(
    alone: int, path: str, headers: dict[str, str], content_type: str, max_age: int
) -> None:
    status, answer, body = fetch(alone, "GET", path, headers)
    assert (status, answer["content-type"]) == (200, content_type)
    assert answer.get("content-encoding") == ("gzip" if headers else None)
    for condition in (
        {"If-None-Match": answer["etag"]},
        {"If-None-Match": f'"nope", {answer["etag"]}'},
        {"If-Modified-Since": answer["last-modified"]},
    ):
        status, again, content = fetch(alone, "GET", path, {**headers, **condition})
        assert (status, content) == (304, b""), condition
        assert again["cache-control"] == f"public, max-age={max_age}"
        assert again["etag"] == answer["etag"]
        assert again["vary"].lower() == "accept-encoding"
        assert_once(SITE)
    # A tag of the other encoding, or an older date, is no match: the whole answer again.
    other = fetch(alone, "GET", path, {} if headers else GZ)[1]["etag"]
    assert other != answer["etag"]
    assert fetch(alone, "GET", path, {**headers, "If-None-Match": other})[0] == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert fetch(alone, "GET", path, {**headers, "If-Modified-Since": old})[0] == 200


def test_a_410_is_never_a_304(alone: int) -> None:
    for condition in (
        {"If-None-Match": "*"},
        {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
    ):
        status, headers, body = fetch(alone, "GET", "/bac-kan/rut-3.html", condition)
        assert (status, body) == (410, NOTICE)
        assert headers["cache-control"] == "public, max-age=30"


def _readable(site: Path) -> None:
    for path in [site, *site.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_a_gz_whose_original_is_missing_is_never_served(alone: int, site: Path) -> None:
    # A first write that died between the .gz and the file, or a .gz left by hand: the URL
    # is still missing, in either encoding, and a withdrawn one still says 410 with its notice.
    stale = gzip.compress(PAGE, mtime=0)
    (site / "bac-kan" / "cu-5.html.gz").write_bytes(stale)
    (site / "bac-kan" / "rut-3.html.gz").write_bytes(stale)
    _readable(site)
    try:
        for headers in ({}, GZ):
            status, answer, body = fetch(alone, "GET", "/bac-kan/cu-5.html", headers)
            assert (status, body) == (404, not_found_page()), headers
            assert "content-encoding" not in answer
            status, answer, body = fetch(alone, "GET", "/bac-kan/rut-3.html", headers)
            assert status == 410
            assert (gzip.decompress(body) if answer.get("content-encoding") else body) == NOTICE
            # A sibling is never a URL of its own.
            for path in ("/bac-kan/cu-5.html.gz", "/bac-kan/tin-1.html.gz", "/feeds/all.rss.GZ"):
                status, answer, body = fetch(alone, "GET", path, headers)
                assert (status, body) == (404, not_found_page()), path
    finally:
        (site / "bac-kan" / "cu-5.html.gz").unlink()
        (site / "bac-kan" / "rut-3.html.gz").unlink()


def test_a_withdrawal_through_storage_shows_at_once_in_both_encodings(
    alone: int, site: Path
) -> None:
    storage = LocalStorage(site)
    url, relative = "/bac-kan/rut-6.html", "bac-kan/rut-6.html"
    storage.put(relative, PAGE)
    _readable(site)
    status, answer, body = fetch(alone, "GET", url, GZ)
    assert (status, answer["content-encoding"], gzip.decompress(body)) == (200, "gzip", PAGE)
    storage.delete(relative)
    storage.put(str(tombstone_for(url)), NOTICE)
    _readable(site)
    assert not (site / "bac-kan" / "rut-6.html.gz").exists()
    for headers in ({}, GZ):
        status, answer, body = fetch(alone, "GET", url, headers)
        assert status == 410
        assert (gzip.decompress(body) if answer.get("content-encoding") else body) == NOTICE
        assert answer["content-type"] == "text/html; charset=utf-8"
    assert fetch(alone, "GET", url, GZ)[1]["content-encoding"] == "gzip"  # the notice's .gz
    storage.delete(str(tombstone_for(url)))


def test_the_404_page_comes_from_the_gateway_until_the_site_has_one(
    ports: tuple[int, int], site: Path
) -> None:
    page = site / ERROR_PAGE
    page.rename(page.with_name("404.bak"))
    try:
        status, headers, body = fetch(ports[1], "GET", "/khong-co.html")
        assert (status, body, headers["cache-control"]) == (404, not_found_page(), "no-store")
        assert_once(SITE)
    finally:
        page.with_name("404.bak").rename(page)


def test_the_gateway_still_answers_what_needs_code(alone: int) -> None:
    # Nothing listens behind this nginx: only these reach for the gateway.
    for method, path in (("GET", "/healthz"), ("POST", "/"), ("GET", "/bac-kan")):
        assert fetch(alone, method, path)[0] == 502, (method, path)
    assert fetch(alone, "GET", "/metrics")[0] == 404


# -- deploy/nginx-s3.conf: nginx in front of the bucket ------------------------------------------

S3_CONF = harness.ROOT / "deploy" / "nginx-s3.conf"


def s3_conf(work: Path, port: int, endpoint: str, bucket_path: str) -> str:
    """deploy/nginx-s3.conf with its documented placeholders replaced."""
    text = S3_CONF.read_text()
    substitutions = {
        "s3.internal:9000": endpoint,
        "/bantin/site": bucket_path,
        "/var/cache/nginx/bantin": str(work / "cache"),
        "listen 80": f"listen 127.0.0.1:{port}",
    }
    for placeholder, value in substitutions.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    return text


def test_the_s3_front_is_valid_nginx(tmp_path: Path) -> None:
    conf = s3_conf(tmp_path, harness.free_port(), f"127.0.0.1:{harness.free_port()}", "/b/site")
    harness.nginx_starter(tmp_path, "s3-check", conf)  # writes the file, with private paths
    nginx = harness._nginx()
    assert nginx is not None
    prefix = tmp_path / "s3-check"
    done = subprocess.run([nginx, "-t", "-p", str(prefix), "-e", str(prefix / "error.log"),
                           "-c", str(prefix / "nginx.conf")], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr


def test_the_s3_front_serves_the_bucket(tmp_path: Path) -> None:
    # A real S3-compatible server (moto) filled by the real S3Storage, a real nginx running
    # deploy/nginx-s3.conf in front: pages, .gz, 304, 410 tombstones, the 404 page.
    from shared.storage import S3Storage
    from shared.testing import moto_env, start_moto

    with start_moto() as moto, pytest.MonkeyPatch.context() as env:
        for name, value in moto_env().items():
            env.setenv(name, value)
        storage = S3Storage.from_url(moto.storage_url("bantin", "site"))
        # Anonymous reads, as the file's header asks of the bucket (nginx signs nothing).
        readable = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
                    "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bantin/*"}]}  # fmt: skip
        storage.client.put_bucket_policy(Bucket="bantin", Policy=json.dumps(readable))
        storage.put("bac-kan/tin-1.html", PAGE)
        storage.put("bac-kan/index.html", PAGE)
        storage.put("feeds/all.rss", FEED)
        storage.put("feeds/all.json", JSON_FEED)
        storage.put("nho.html", b"<p>nho</p>")
        storage.put(str(tombstone_for("/bac-kan/rut-3.html")), NOTICE)
        storage.put(ERROR_PAGE, not_found_page())
        port = harness.free_port()
        conf = s3_conf(tmp_path, port, moto.endpoint.removeprefix("http://"), "/bantin/site")
        nginx = harness.Server("nginx-s3", port, harness.nginx_starter(tmp_path, "s3", conf))
        nginx.process = nginx.start()
        try:
            harness.wait_ready(nginx, "/bac-kan/tin-1.html")
            status, headers, body = fetch(port, "GET", "/bac-kan/tin-1.html")
            assert (status, body, headers.get("content-encoding")) == (200, PAGE, None)
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert headers["cache-control"] == "public, max-age=30"
            assert headers["vary"] == "Accept-Encoding"
            assert_once(SITE)
            status, zipped, body = fetch(port, "GET", "/bac-kan/tin-1.html", GZ)
            assert (status, zipped["content-encoding"], gzip.decompress(body)) == (
                200,
                "gzip",
                PAGE,
            )
            assert zipped["content-type"] == "text/html; charset=utf-8"
            assert zipped["etag"] != headers["etag"]  # another object, another tag
            for headers_ in ({}, GZ):
                answer = fetch(port, "GET", "/bac-kan/tin-1.html", headers_)[1]
                again = fetch(port, "GET", "/bac-kan/tin-1.html",
                              {**headers_, "If-None-Match": answer["etag"]})  # fmt: skip
                assert again[0] == 304
            assert (
                fetch(port, "GET", "/bac-kan/tin-1.html", {"Accept-Encoding": "gzip;q=0"})[2]
                == PAGE
            )
            assert fetch(port, "GET", "/bac-kan/", GZ)[0] == 200
            status, headers, body = fetch(port, "GET", "/feeds/all.json", GZ)
            assert headers["content-type"] == JSON_FEED_TYPE and gzip.decompress(body) == JSON_FEED
            status, headers, body = fetch(port, "GET", "/nho.html", GZ)  # no .gz: the file
            assert (status, body, headers.get("content-encoding")) == (200, b"<p>nho</p>", None)
            for headers_ in ({}, GZ, {"If-None-Match": "*"}):
                status, headers, body = fetch(port, "GET", "/bac-kan/rut-3.html", headers_)
                assert (status, body) == (410, NOTICE), headers_
                assert headers["content-type"] == "text/html; charset=utf-8"
                assert_once(SITE)
            for path in ("/khong-co.html", "/.gone/bac-kan/rut-3.html", "/bac-kan/tin-1.html.gz",
                         "/bac-kan/.tmp-1"):  # fmt: skip
                status, headers, body = fetch(port, "GET", path, GZ)
                assert (status, body) == (404, not_found_page()), path
                assert headers["cache-control"] == "no-store"
            assert fetch(port, "GET", "/.errors/404.html")[0] == 404  # internal: nginx's own
            # A withdrawal shows within the cache's second.
            storage.delete("bac-kan/tin-1.html")
            storage.put(str(tombstone_for("/bac-kan/tin-1.html")), NOTICE)
            deadline = time.monotonic() + 10
            while fetch(port, "GET", "/bac-kan/tin-1.html", GZ)[0] != 410:
                assert time.monotonic() < deadline, "the withdrawal never showed"
                time.sleep(0.2)
            assert fetch(port, "GET", "/bac-kan/tin-1.html")[:3:2] == (410, NOTICE)
            assert fetch(port, "POST", "/bac-kan/")[0] == 405
        finally:
            harness.stop(nginx.process)
