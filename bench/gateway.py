"""Gateway throughput against nginx: an article page, a feed and a ``304``, with ``wrk``.

    python -m bench.gateway [--quick] [--seconds N] [--repeats N] [--compare]

Builds a small site (the seed bulletin rendered by the real ``PageRenderer``; a 50-item RSS
feed from the real ``build_feeds``), starts the gateway exactly as production runs it and, on
the same directory, nginx as the reference (2 worker processes each), then runs
``wrk -t2 -c64 --latency`` against each URL on each server, back to back, ``repeats`` times.
Each figure is the median over the repeats. Only 127.0.0.1 is ever contacted; every process
started here is stopped in a ``finally``.

The gateway rows are the owner's comparison: identity bodies (wrk sends no Accept-Encoding)
against nginx, the same bytes on both sides. Real browsers and feed readers all send
``Accept-Encoding: gzip``, so the "gzip" rows measure that too: the gateway sends the form it
compressed once per file version, nginx the ``.gz`` written beside each file.

"production" is ``deploy/nginx.conf`` on a site written by ``LocalStorage`` (so every page and
feed has its ``<file>.gz``, the 404 page is ``.errors/404.html`` and a withdrawn URL has its
tombstone): nginx answers pages, feeds, gzip, 304s, 404s and 410s by itself, the gateway sits
behind it idle (its CPU is not counted: it answers none of these requests). Issue 11's target
is ``production / nginx >= 0.9x`` for page, feed, page gzip, feed gzip and 304, by requests/s
and by CPU time per request, "nginx" being the bare reference (stock static-file config,
``gzip_static on``) on the very same files, measured side by side in one run. The 404 and
410 rows are for information (the bare nginx answers its own short 404 there: it knows no 404
page and no tombstones).

Beside each figure, the note gives the server's CPU time per request (all its processes, user
plus system, from /proc): unlike requests/s, that hardly moves when something else on the
machine takes CPU, so it is the steadier way to compare two versions of the code.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.core import Options, Result, table
from services.cli.client import load_bulletin
from services.feed.feeds import build_feeds
from services.gateway.app import not_found_page
from services.render.pages import PageRenderer
from shared.models import Agency, BodyFormat, Bulletin
from shared.sanitize import body_to_html
from shared.settings import Settings
from shared.site import Listing, ListingKind, article_path, file_for, tombstone_for
from shared.slug import slugify
from shared.storage import LocalStorage

SCENARIO = "5 gateway"
ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "000_4fbfac1c975a2018.txt"
PRODUCTION_NGINX_CONF = ROOT / "deploy" / "nginx.conf"
PUBLIC_URL = "https://bantin.example.gov.vn"
AGENCY = ("UBND tỉnh Bắc Kạn", "bac-kan")
FEED_ITEMS = 50
CONNECTIONS = 64
THREADS = 2
WORKERS = 2
HOST = "127.0.0.1"  # never anything else: this benchmark only talks to itself
GZIP = {"Accept-Encoding": "gzip"}

# How production runs the gateway (services/cli/up.py and the README should say the same).
# httptools + uvloop: uvicorn picks them when installed, but naming them makes a missing extra
# fail loudly instead of silently running on the pure-Python h11 parser at a fraction of the
# speed. --no-proxy-headers: the gateway never looks at the client address or scheme (its
# redirects are relative), so the X-Forwarded-* middleware is a wasted coroutine per request.
# --no-server-header: one header line fewer to validate and send (and no software banner).
# Their gain is within this machine's noise: 0-4 µs of CPU per request over several runs
# (article page 39 -> 35 µs in one, 35 -> 33 µs in another, 304s and feeds unchanged). Kept
# because they cost nothing: nothing in the gateway uses what they remove.
GATEWAY_FLAGS = ["--workers", str(WORKERS), "--http", "httptools", "--loop", "uvloop",
                 "--no-access-log", "--no-proxy-headers", "--no-server-header",
                 "--log-level", "warning"]  # fmt: skip
# Alternatives `--compare` measures beside the production command.
UVICORN_DEFAULT_FLAGS = ["--workers", str(WORKERS), "--http", "httptools", "--loop", "uvloop",
                         "--no-access-log", "--log-level", "warning"]  # fmt: skip
GRANIAN_FLAGS = ["--interface", "asgi", "--factory", "--workers", str(WORKERS), "--loop",
                 "uvloop", "--no-ws", "--log-level", "warning"]  # fmt: skip


@dataclass(frozen=True)
class Target:
    name: str  # "page", "feed", "304", "page gzip", ...
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    conditional: bool = False  # add If-None-Match with the ETag this server gives
    status: int = 200  # what the answer must be (404 and 410 rows)


@dataclass
class Run:
    requests_per_s: float
    p99_ms: float
    cpu_us: float  # server CPU time per request, all its processes
    errors: str = ""


@dataclass
class Server:
    name: str
    port: int
    start: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    behind: Server | None = None  # the gateway an nginx front proxies to: its CPU counts too

    def cpu_seconds(self) -> float:
        assert self.process is not None
        own = cpu_seconds(self.process.pid)
        return own + (self.behind.cpu_seconds() if self.behind else 0.0)


# -- the site ---------------------------------------------------------------------------------


def _shuffled(text: str, rng: random.Random) -> str:
    """The seed's words in another order, paragraph by paragraph: every feed item then has its
    own text, with the seed's vocabulary and lengths. Fifty copies of one text would gzip
    to almost nothing (they repeat within deflate's 32 KiB window), flattering the gzip rows."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        words = paragraph.split()
        rng.shuffle(words)
        paragraphs.append(" ".join(words))
    return "\n\n".join(paragraphs)


def _bulletin(
    seed: dict[str, object], bulletin_id: int, agency: Agency, when: datetime
) -> Bulletin:
    body = str(seed["body"])
    if bulletin_id != FEED_ITEMS:  # the newest is the seed itself: the article page
        body = _shuffled(body, random.Random(bulletin_id))
    bulletin = Bulletin(
        id=bulletin_id,
        guid=f"urn:uuid:4fbfac1c-975a-4018-8000-{bulletin_id:012d}",
        agency_id=agency.id,
        slug=slugify(str(seed["title"])),
        title=f"{seed['title']} ({bulletin_id})",
        summary=seed.get("summary"),
        body_format="text",
        body_source=body,
        body_html=body_to_html(body, BodyFormat.TEXT, base_url=PUBLIC_URL),
        author=seed.get("author"),
        category="Giáo dục",
        category_slug="giao-duc",
        language="vi",
        published_at=when,
        updated_at=when,
        revision=1,
    )
    bulletin.agency = agency
    return bulletin


def build_site(site: Path) -> tuple[str, str, str]:
    """Write one article page and one 50-item RSS feed through ``LocalStorage``, as the workers
    do (each with its ``.gz``), a withdrawn page's tombstone and the 404 page; return the page's,
    the feed's and the withdrawn page's URL paths."""
    settings = Settings(public_url=PUBLIC_URL, timezone="Asia/Ho_Chi_Minh")
    seed = load_bulletin(SEED, ZoneInfo("Asia/Ho_Chi_Minh"))
    agency = Agency(id=1, name=AGENCY[0], slug=AGENCY[1])
    newest = datetime(2024, 3, 9, 2, 5, tzinfo=UTC)
    bulletins = [
        _bulletin(seed, i, agency, newest - timedelta(hours=FEED_ITEMS - i))
        for i in range(FEED_ITEMS, 0, -1)
    ]
    page_path = article_path(agency.slug, bulletins[0].slug, bulletins[0].id)
    listing = Listing(ListingKind.AGENCY, agency.slug)
    feed_path = listing.feed_path("rss")
    files = {
        page_path: PageRenderer(settings).article(bulletins[0]).encode(),
        feed_path: build_feeds(listing, agency.name, bulletins, settings).rss,
    }
    if site.exists():
        shutil.rmtree(site)
    storage = LocalStorage(site)  # 0644 files: nginx's workers must read them too
    for url_path, body in files.items():
        storage.put(file_for(url_path), body)
    withdrawn = article_path(agency.slug, bulletins[1].slug, bulletins[1].id)
    notice = PageRenderer(settings).article(bulletins[1]).encode()  # a notice of that size
    storage.put(tombstone_for(withdrawn), notice)
    storage.put(".errors/404.html", not_found_page())
    site.chmod(0o755)
    for directory in site.rglob("*"):
        if directory.is_dir():
            directory.chmod(0o755)
    return page_path, feed_path, withdrawn


# -- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        # Own session and process group: stop() signals the group, workers included.
        return subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def gateway_starter(
    workdir: Path, site: Path, name: str, port: int, command: list[str]
) -> Callable[[], subprocess.Popen[bytes]]:
    env = dict(os.environ, BANTIN_DATA_DIR=str(workdir), BANTIN_SITE_DIR=str(site))
    if command[0] == "granian":
        argv = [sys.executable, "-m", "granian", "--host", HOST, "--port", str(port),
                *command[1:], "services.gateway.app:app_from_env"]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "services.gateway.app:app_from_env",
                "--host", HOST, "--port", str(port), *command]  # fmt: skip
    return lambda: _spawn(argv, workdir / f"{name}.log", env)


def _nginx() -> str | None:
    """nginx lives in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


REFERENCE_CONF = """\
# The reference: nginx's static-file path on the same files, as a stock install serves them.
worker_processes auto;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    etag on;
    server_tokens off;
    {gzip}
    types {{
        text/html html;
        application/rss+xml rss;
    }}
    charset utf-8;
    charset_types application/rss+xml;
    server {{
        listen {host}:{port};
        root {site};
        location / {{
            add_header Cache-Control "public, max-age=30";
            add_header X-Content-Type-Options nosniff;
        }}
        location /feeds/ {{
            add_header Cache-Control "public, max-age=60";
            add_header X-Content-Type-Options nosniff;
        }}
    }}
}}
"""
# The same .gz files production serves, the stock way.
GZIP_STATIC = "gzip_static on; gzip_vary on;"


def _production_conf(
    site: Path, port: int, gateway_port: int, ingest: tuple[int, int] | None = None
) -> str:
    """deploy/nginx.conf with its placeholders for the site, ports and gateway address, and
    ``ingest``: (nginx's API port, ingest's port); by default free ports, no ingest behind."""
    text = PRODUCTION_NGINX_CONF.read_text()
    ingest_front, ingest_port = ingest or (free_port(), free_port())
    substitutions = {
        "/srv/bantin/site": str(site),
        "listen 80": f"listen {HOST}:{port}",
        "gateway:8000": f"{HOST}:{gateway_port}",
        "*:8001": f"{HOST}:{ingest_front}",
        "ingest:8001": f"{HOST}:{ingest_port}",
    }
    for placeholder, value in substitutions.items():
        if placeholder not in text:
            raise RuntimeError(f"{PRODUCTION_NGINX_CONF} no longer has {placeholder!r}")
        text = text.replace(placeholder, value)
    return text


def nginx_starter(workdir: Path, name: str, conf: str) -> Callable[[], subprocess.Popen[bytes]]:
    nginx = _nginx()
    assert nginx is not None
    prefix = workdir / name
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / temp).mkdir(parents=True, exist_ok=True)
    # Private everything: pid, logs and temp dirs in the prefix, 2 workers, in the foreground.
    # As root nginx would drop its workers to "nobody"; keep them as the owner of the files.
    user = "user root;" if os.geteuid() == 0 else ""
    head = (f"worker_processes {WORKERS};\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn;\n{user}\n")  # fmt: skip
    temps = "".join(f"    {directive} {prefix}/{sub};\n" for directive, sub in (
        ("client_body_temp_path", "body"), ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"), ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi")))  # fmt: skip
    conf, replaced = re.subn(r"^worker_processes .*;$", head, conf, count=1, flags=re.MULTILINE)
    if not replaced:
        raise RuntimeError(f"{name}: the nginx configuration has no worker_processes line")
    conf = conf.replace("http {", "http {\n" + temps, 1)
    (prefix / "nginx.conf").write_text(conf)
    argv = [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c",
            str(prefix / "nginx.conf"), "-g", "daemon off;"]  # fmt: skip
    return lambda: _spawn(argv, prefix / "stdout.log")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a child this benchmark started, and its workers (its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    try:
        os.killpg(process.pid, signal.SIGKILL)  # any worker left behind
    except ProcessLookupError:
        pass


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def wait_ready(server: Server, path: str) -> None:
    assert server.process is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}")
        try:
            if get(server.port, path).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} did not answer {path} within 30 s")


def check(server: Server, target: Target) -> dict[str, str]:
    """The request headers for ``target`` on ``server``, having checked the answer is what the
    row claims (a 200 in the asked encoding, or a real 304), so wrk measures the right thing."""
    headers = dict(target.headers)
    response = get(server.port, target.path, headers)
    encoding = response.getheader("Content-Encoding")
    wanted = target.status
    if response.status != wanted or (wanted == 200 and encoding != (
            "gzip" if "Accept-Encoding" in headers else None)):  # fmt: skip
        raise RuntimeError(f"{server.name} {target.path}: {response.status}, {encoding=}")
    if target.conditional:
        etag = response.getheader("ETag")
        if not etag:
            raise RuntimeError(f"{server.name} {target.path}: no ETag")
        headers["If-None-Match"] = etag
        again = get(server.port, target.path, headers)
        if again.status != 304:
            raise RuntimeError(f"{server.name}: If-None-Match answered {again.status}")
    return headers


# -- wrk --------------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if found is None:
        raise RuntimeError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str) -> tuple[int, float, float, str]:
    """Requests completed, requests/s, p99 in ms (from ``--latency``), and any errors."""
    total = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if total is None or rate is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = [found.group(0) for pattern in (r"Socket errors:[^\n]*", r"Non-2xx or 3xx[^\n]*")
              if (found := re.search(pattern, output))]  # fmt: skip
    return int(total.group(1)), float(rate.group(1)), _ms(p99.group(1)), "; ".join(errors)


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every live process in a process group."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(
    server: Server, path: str, seconds: float, headers: dict[str, str], status: int = 200
) -> Run:
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://{HOST}:{server.port}{path}")
    before = server.cpu_seconds()
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30)
    used = server.cpu_seconds() - before
    total, rate, p99, errors = parse_wrk(done.stdout)
    if status >= 400:  # the 404 and 410 rows: every answer is a "Non-2xx", as asked
        errors = "; ".join(e for e in errors.split("; ") if not e.startswith("Non-2xx"))
    return Run(rate, p99, used / max(total, 1) * 1e6, errors)


# -- the scenario -----------------------------------------------------------------------------

# (row label, target, servers compared): the first server is "ours", the second the reference.
Plan = list[tuple[Target, list[str]]]


def measure(
    servers: dict[str, Server],
    plan: Plan,
    seconds: float,
    repeats: int,
    expected: dict[tuple[str, str], int] | None = None,
) -> dict[tuple[str, str], list[Run]]:
    """Every (server, target) ``repeats`` times; the servers of one target back to back, so
    whatever else the machine is doing affects them alike. ``expected``: a status other than
    the target's for some (server, row)."""
    expected = expected or {}
    targets = {
        (name, t.name): replace(t, status=expected.get((name, t.name), t.status))
        for t, names in plan
        for name in names
    }
    headers = {key: check(servers[key[0]], target) for key, target in targets.items()}
    for (name, _), target in targets.items():
        wrk(servers[name], target.path, 1, headers[(name, target.name)], target.status)  # warm-up
    runs: dict[tuple[str, str], list[Run]] = {}
    for _ in range(repeats):
        for t, names in plan:
            for name in names:
                target = targets[(name, t.name)]
                run_ = wrk(servers[name], t.path, seconds, headers[(name, t.name)], target.status)
                runs.setdefault((name, t.name), []).append(run_)
    return runs


def run(options: Options) -> list[Result]:
    """The harness entry point; ``options.size``, when given, is the seconds per wrk run."""
    seconds = float(options.size) if options.size else (3.0 if options.quick else 10.0)
    repeats = 1 if options.quick else 3
    return measure_all(options.workdir, seconds, repeats)


def measure_all(workdir: Path, seconds: float, repeats: int, compare: bool = False) -> list[Result]:
    if shutil.which("wrk") is None or _nginx() is None:
        raise RuntimeError("needs wrk and nginx: apt-get install -y wrk nginx-light")
    workdir = (workdir / "gateway").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    site = workdir / "site"
    page, feed, withdrawn = build_site(site)
    names = ["gateway", "nginx", "production"]
    if compare:
        names += ["uvicorn-default"]
        if importlib.util.find_spec("granian") is not None:  # not a dependency: optional
            names += ["granian"]
    ports = {name: free_port() for name in names}

    def gateway(name: str, command: list[str]) -> Server:
        return Server(name, ports[name], gateway_starter(workdir, site, name, ports[name], command))

    ours = gateway("gateway", GATEWAY_FLAGS)
    bare = REFERENCE_CONF.format(gzip=GZIP_STATIC, host=HOST, port=ports["nginx"], site=site)
    production = _production_conf(site, ports["production"], ours.port)
    servers = {
        "gateway": ours,
        "nginx": Server("nginx", ports["nginx"], nginx_starter(workdir, "nginx", bare)),
        # The gateway behind production answers none of these rows (the tests prove which
        # requests reach it): its idle CPU is a cost per second, not per request, so only
        # nginx's processes are counted here.
        "production": Server("production", ports["production"],
                             nginx_starter(workdir, "production", production)),
    }  # fmt: skip
    alternatives = []
    if compare:
        servers["uvicorn-default"] = gateway("uvicorn-default", UVICORN_DEFAULT_FLAGS)
        if "granian" in ports:
            servers["granian"] = gateway("granian", ["granian", *GRANIAN_FLAGS])
        alternatives = [name for name in ("uvicorn-default", "granian") if name in ports]
    everyone = ["gateway", "nginx", "production", *alternatives]
    plan: Plan = [
        (Target("page", page), everyone),
        (Target("feed", feed), everyone),
        (Target("304", page, conditional=True), everyone),
        (Target("page gzip", page, GZIP), everyone),
        (Target("feed gzip", feed, GZIP), everyone),
        # For information: the bare nginx answers its own short 404 for both.
        (Target("404", "/bac-kan/khong-co.html", GZIP, status=404), ["nginx", "production"]),
        (Target("410", withdrawn, GZIP, status=410), ["nginx", "production"]),
    ]
    # The bare nginx has no tombstones: it is asked for the same URL and says 404.
    expected = {("nginx", "410"): 404}
    try:
        for server in servers.values():
            server.process = server.start()
        for server in servers.values():
            wait_ready(server, page)
        runs = measure(servers, plan, seconds, repeats, expected)
    finally:
        for server in servers.values():
            if server.process is not None:
                stop(server.process)
    sizes = {
        page: (site / file_for(page)).stat().st_size,
        feed: (site / file_for(feed)).stat().st_size,
    }
    how = f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds:g}s, median of {repeats}"
    return results(runs, plan, sizes, how)


def _median(runs: list[Run], attribute: str) -> float:
    return float(statistics.median(getattr(r, attribute) for r in runs))


DESCRIPTIONS = {
    "gateway": "Python gateway (uvicorn, 2 workers)",
    "nginx": "bare nginx (stock static config, gzip_static on), the same files",
    "production": "deploy/nginx.conf, the site's .gz files, idle gateway behind it",
    "uvicorn-default": "gateway, uvicorn without --no-proxy-headers/--no-server-header",
    "granian": "gateway on granian (ASGI, 2 workers)",
}
# Issue 11: the production read path within 0.9x of bare nginx on the same files.
PRODUCTION_TARGET = 0.9
PRODUCTION_ROWS = ("page", "feed", "304", "page gzip", "feed gzip")


def _what(t: Target, sizes: dict[str, int]) -> str:
    if t.conditional:
        return "304 (page)"
    if t.path in sizes:
        return f"{t.name} ({sizes[t.path] / 1024:.0f} KiB)"
    return t.name


def results(
    runs: dict[tuple[str, str], list[Run]], plan: Plan, sizes: dict[str, int], how: str
) -> list[Result]:
    out: list[Result] = []
    for t, names in plan:
        what = _what(t, sizes)
        rates = {name: _median(runs[(name, t.name)], "requests_per_s") for name in names}
        cpu = {name: _median(runs[(name, t.name)], "cpu_us") for name in names}
        for name in names:
            mine = runs[(name, t.name)]
            errors = "; ".join(sorted({r.errors for r in mine if r.errors}))
            note = (f"{DESCRIPTIONS[name]}; {cpu[name]:.1f} µs CPU/request; "
                    f"p99 {_median(mine, 'p99_ms'):.2f} ms")  # fmt: skip
            if name in ("gateway", "production"):
                spread = ", ".join(f"{r.requests_per_s:,.0f}" for r in mine)
                note += f"; {how}: {spread}"
            out.append(Result(SCENARIO, f"{what}: {name} req/s", rates[name], "req/s",
                              note=note + (f"; {errors}" if errors else "")))  # fmt: skip
        # The production read path against the bare nginx: requests/s (noisy on a shared
        # machine) and CPU time per request (steadier), each with the target.
        if "production" in names:
            ratio = rates["production"] / rates["nginx"]
            by_cpu = cpu["nginx"] / cpu["production"]
            informative = t.name not in PRODUCTION_ROWS
            target = "" if informative else f">= {PRODUCTION_TARGET}x"
            for label, value in (("req/s", ratio), ("by CPU/request", by_cpu)):
                met = None if informative else value >= PRODUCTION_TARGET
                out.append(Result(SCENARIO, f"{t.name}: production / nginx, {label}",
                                  f"{value:.2f}", "x", target, met,
                                  f"{cpu['production']:.1f} vs {cpu['nginx']:.1f} µs CPU/request"
                                  if label == "req/s" else ""))  # fmt: skip
        for name in [n for n in names if n not in ("nginx", "production")]:
            ratio = rates[name] / rates["nginx"]
            # What the ratio would be with each server alone on its cores: requests/s swing
            # with whatever else this machine runs, CPU time per request hardly does.
            note = f"by CPU time per request: {cpu['nginx'] / cpu[name]:.2f}x"
            if t.name in ("page", "feed"):
                target, met = ">= 0.5x nginx", ratio >= 0.5
            elif t.conditional:
                # "...and faster still for 304s", read strictly, as the brief asks: beat nginx.
                target, met = "> 1.0x nginx", ratio > 1.0
            else:
                target, met = "", None  # gzip: reported, no target was set
            # Two decimals (as text: the table prints numbers with one), so 0.46 never shows
            # as a "0.5" that missed its ">= 0.5".
            out.append(Result(SCENARIO, f"{t.name}: {name} / nginx", f"{ratio:.2f}", "x",
                              target, met, note))  # fmt: skip
        if t.name in ("page", "feed", "304") and "gateway" in names:
            p99 = _median(runs[("gateway", t.name)], "p99_ms")
            out.append(Result(SCENARIO, f"{t.name}: gateway p99", p99, "ms"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--compare", action="store_true", help="also uvicorn defaults, granian")
    parser.add_argument("--workdir", type=Path, default=Path("var") / "bench")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    repeats = args.repeats or (1 if args.quick else 3)
    print(table(measure_all(args.workdir, seconds, repeats, args.compare)))


if __name__ == "__main__":
    main()
