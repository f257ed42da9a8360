"""The gateway's /metrics: requests by route kind and status, cache hits and misses, the
per-process tallies and their flush, multiprocess mode, promtool's check, and the heartbeat
(which never stops the gateway serving when Redis is missing or down)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from starlette.types import Message

from services.gateway import metrics
from services.gateway.app import Gateway, create_app, heartbeat_for
from services.gateway.metrics import LATENCY_BUCKETS, BulkHistogram, Tally, route_kind
from shared.embedded_redis import free_port
from shared.heartbeat import Heartbeat, read_all
from shared.security_headers import SITE_HEADERS
from shared.settings import Settings
from shared.storage import LocalStorage
from tests.metrics import Series, changes, promtool_problems, snapshot
from tests.unit.gateway.test_gateway import ARTICLE, Client, call

ROOT = Path(__file__).resolve().parents[3]


def req(route: str, status: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("bantin_gateway_http_requests_total", (("route", route), ("status", str(status))))


def cache(result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("bantin_gateway_cache_lookups_total", (("result", result),))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, site_dir=tmp_path / "site")


@pytest.fixture
def app(settings: Settings) -> Gateway:
    site = settings.resolved_site_dir
    site.mkdir(parents=True)
    store = LocalStorage(site)
    store.put("index.html", b"<!doctype html><title>Trang chu</title>")
    store.put("bac-kan/lich-12.html", ARTICLE)
    store.put("feeds/all.rss", b"<?xml version='1.0'?><rss version='2.0'></rss>")
    store.put("static/site.css", b"body { color: #222 }\n")
    return create_app(settings)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/bac-kan/lich-tiep-cong-dan-12.html", "article"),
        ("/", "listing"),
        ("/bac-kan/", "listing"),
        ("/chuyen-muc/giao-duc/index.html", "listing"),
        ("/feeds/all.rss", "feed"),
        ("/feeds/agency/bac-kan.atom", "feed"),
        ("/static/site.css", "static"),
        ("/healthz", "health"),
        ("/metrics", "metrics"),
        ("/bac-kan", "other"),
        ("/wp-login.php", "other"),
    ],
)
def test_every_path_falls_in_one_of_a_few_route_kinds(path: str, kind: str) -> None:
    assert route_kind(path) == kind
    assert kind in metrics.ROUTE_KINDS


def test_requests_count_once_by_route_kind_and_status_with_cache_hits(app: Gateway) -> None:
    names = ("bantin_gateway_http_requests_total", "bantin_gateway_cache_lookups_total",
             "bantin_gateway_http_request_duration_seconds_count")  # fmt: skip
    app.tally.flush()
    before = snapshot(*names)
    first = call(app, "/bac-kan/lich-12.html")
    assert first.status == 200
    assert call(app, "/bac-kan/lich-12.html").status == 200  # from the cache
    etag = first.headers["etag"]
    assert call(app, "/bac-kan/lich-12.html", headers={"if-none-match": etag}).status == 304
    assert call(app, "/feeds/all.rss").status == 200
    assert call(app, "/static/site.css").status == 200
    assert call(app, "/", method="HEAD").status == 200
    assert call(app, "/khong-co.html").status == 404
    assert call(app, "/healthz").status == 200
    assert call(app, "/", method="POST").status == 405
    app.tally.flush()
    duration = "bantin_gateway_http_request_duration_seconds_count"
    assert changes(before, snapshot(*names)) == {
        req("article", 200): 2.0,
        req("article", 304): 1.0,
        req("article", 404): 1.0,
        req("feed", 200): 1.0,
        req("static", 200): 1.0,
        req("listing", 200): 1.0,
        req("health", 200): 1.0,
        req("listing", 405): 1.0,
        cache("hit"): 2.0,  # the second page request and the 304
        cache("miss"): 5.0,  # first reads of the page, feed, css, index, and the 404
        (duration, (("route", "article"),)): 4.0,
        (duration, (("route", "feed"),)): 1.0,
        (duration, (("route", "static"),)): 1.0,
        (duration, (("route", "listing"),)): 2.0,
        (duration, (("route", "health"),)): 1.0,
    }


def test_metrics_flush_this_process_first_and_pass_promtool(app: Gateway) -> None:
    client = Client(app)
    assert client.get("/static/site.css").status_code == 200
    before = snapshot("bantin_gateway_http_requests_total")
    response = client.get("/metrics")  # flushes the css request counted above (if not yet)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["cache-control"] == "no-store"
    for name, value in SITE_HEADERS:
        assert response.headers[name] == value
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    served = families["bantin_gateway_http_requests"].samples
    assert any(s.labels == {"route": "static", "status": "200"} and s.value >= 1 for s in served)
    assert "bantin_gateway_cache_lookups" in families
    assert client.head("/metrics").content == b""
    assert snapshot("bantin_gateway_http_requests_total") != before  # the css, flushed
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing (Debian package prometheus; CI installs it)")
    assert promtool_problems(response.content) == ""


def test_the_tallies_flush_by_themselves_while_idle(
    app: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 0.01)
    app.tally.flush()
    before = snapshot("bantin_gateway_http_requests_total")

    async def one_request_then_idle() -> Series:
        app.tally.record("feed", 200, 0.0002)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            after = snapshot("bantin_gateway_http_requests_total")
            if after != before:
                return after
        return before

    assert changes(before, asyncio.run(one_request_then_idle())) == {req("feed", 200): 1.0}


def test_bulk_observations_expose_exactly_what_observe_would() -> None:
    observed = [0.0, 0.00005, 0.0001, 0.00011, 0.003, 0.003, 0.7, 1.0, 2.0, 99.0]
    one_by_one, bulk = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("t_seconds", "t", ["route"], buckets=LATENCY_BUCKETS,
                          registry=one_by_one)  # fmt: skip
    tallied = BulkHistogram("t_seconds", "t", ["route"], buckets=LATENCY_BUCKETS, registry=bulk)
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for seconds in observed:
        reference.labels("article").observe(seconds)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # as Tally.record sorts them
    tallied.labels("article").observe_counts(counts, sum(observed))

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(bulk) == lines(one_by_one)
    with pytest.raises(ValueError, match="buckets"):
        tallied.labels("article").observe_counts([1, 2], 0.1)


def test_a_tally_starts_empty_after_each_flush() -> None:
    tally = Tally()

    async def record_and_flush() -> None:
        tally.record("static", 200, 0.001)
        tally.hits += 1
        tally.flush()

    asyncio.run(record_and_flush())
    assert tally.requests == {} and tally.hits == 0
    assert all(not any(values) for values in tally.latency.values())


# One gateway worker per process, as `uvicorn --workers 2` runs them: each serves the page,
# then its /metrics must count every worker's requests.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.gateway.app import create_app
    from shared.settings import Settings
    from tests.unit.gateway.test_gateway import Client

    site = Path(sys.argv[1])
    app = create_app(Settings(data_dir=site.parent, site_dir=site))
    client = Client(app)
    assert client.get("/a/b-1.html").status_code == 200
    sys.stdout.write(client.get("/metrics").text)
    """
)


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "a").mkdir(parents=True)
    (site / "a" / "b-1.html").write_bytes(ARTICLE)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(ROOT)}
    env.pop("BANTIN_REDIS_URL", None)
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", WORKER, str(site)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)

    def pages(text: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = families["bantin_gateway_http_requests"].samples
        return sum(s.value for s in samples if s.labels == {"route": "article", "status": "200"})

    assert [pages(text) for text in outputs] == [1.0, 2.0]
    if shutil.which("promtool"):
        assert promtool_problems(outputs[1].encode()) == ""


# -- the heartbeat --------------------------------------------------------------------------


async def _lifespan(app: Gateway, during: Callable[[], Awaitable[None]]) -> None:
    """Start the app as a server would, run `during`, then shut it down."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return await inbox.get()

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    while "lifespan.startup.complete" not in sent:
        await asyncio.sleep(0.01)
    await during()
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(task, timeout=10)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_no_redis_configured_means_no_heartbeat_and_no_error(settings: Settings) -> None:
    with pytest.raises(RuntimeError):
        settings.broker_url  # noqa: B018  (neither BANTIN_REDIS_URL nor an embedded Redis)
    assert heartbeat_for(settings) is None
    assert heartbeat_for(settings.model_copy(update={"redis_url": "memory://"})) is None


def test_the_gateway_serves_with_its_redis_down(app: Gateway, settings: Settings) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    beating = create_app(settings.model_copy(update={"redis_url": dead}))
    assert isinstance(beating.heartbeat, Heartbeat)

    async def serve() -> None:
        statuses: list[int] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "GET", "path": "/bac-kan/lich-12.html", "headers": []}
        await beating(scope, receive, send)
        assert statuses == [200]

    asyncio.run(_lifespan(beating, serve))


def test_the_gateway_beats_while_it_runs_and_not_after(
    app: Gateway, settings: Settings, private_redis: str
) -> None:
    beating = create_app(settings.model_copy(update={"redis_url": private_redis}))
    redis = Redis.from_url(private_redis)

    def gateways() -> list[str | None]:
        return [beat.metrics_url for beat in read_all(redis) if beat.role == "gateway"]

    async def wait_for_beat() -> None:
        deadline = time.monotonic() + 10
        while not gateways() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # The gateway's own address (nginx in front does not pass /metrics).
        assert gateways() == [f"http://127.0.0.1:{settings.gateway_port}/metrics"]

    asyncio.run(_lifespan(beating, wait_for_beat))
    assert gateways() == []


def _gateway_factory_logging(tmp_path: Path, before: str, after: str) -> list[dict[str, Any]]:
    """Configure logging as uvicorn does (then `before`), call the gateway's factory, run
    `after`, and return the JSON records the process wrote."""
    script = "\n".join([
        "import logging, logging.config",
        "from uvicorn.config import LOGGING_CONFIG",
        "from services.gateway.app import app_from_env",
        "logging.config.dictConfig(LOGGING_CONFIG)",  # what uvicorn does before the factory
        textwrap.dedent(before),
        "app_from_env()",
        textwrap.dedent(after),
    ])  # fmt: skip
    env = {**os.environ, "BANTIN_DATA_DIR": str(tmp_path), "BANTIN_LOG_FORMAT": "json",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    env.pop("BANTIN_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stderr.splitlines()]


def test_the_factory_sends_uvicorn_lines_through_the_json_handler(tmp_path: Path) -> None:
    records = _gateway_factory_logging(tmp_path, "", """
        logging.getLogger("uvicorn.access").info("GET /feeds/all.rss 200")
        logging.getLogger("uvicorn.error").warning("connection lost")
    """)  # fmt: skip
    assert [(r["process"], r["logger"], r["level"], r["message"]) for r in records] == [
        ("gateway", "uvicorn.access", "INFO", "GET /feeds/all.rss 200"),
        ("gateway", "uvicorn.error", "WARNING", "connection lost"),
    ]


def test_an_access_log_switched_off_stays_off(tmp_path: Path) -> None:
    """`--no-access-log` leaves uvicorn's access logger without handler or propagation: the
    factory must not turn it back on (request lines carry one-time sign-in links)."""
    records = _gateway_factory_logging(tmp_path, """
        access = logging.getLogger("uvicorn.access")
        access.handlers, access.propagate = [], False  # what --no-access-log does
    """, """
        logging.getLogger("uvicorn.access").info("GET /console/invite/secret-token 200")
        logging.getLogger("uvicorn.error").warning("connection lost")
    """)  # fmt: skip
    assert [r["message"] for r in records] == ["connection lost"]
