"""The many-hosts demo: Bantin on six "hosts" (network namespaces) that share only
PostgreSQL, Redis and an S3 bucket, one worker host killed mid-run, every page and feed checked.

    sudo .venv/bin/python -m bench hosts       # or: make hosts-demo   (needs root: ip netns)

Hosts (namespaces `bt-*`, one veth each into the bridge `bt-br0`, 10.77.0.0/24; the root
namespace is 10.77.0.1 on the bridge and plays the operator and the clients):

    data      10.77.0.10  PostgreSQL (a private initdb), redis-server, moto_server (S3)
    ingest    10.77.0.11  the write API (uvicorn)
    render-1  10.77.0.21  a render worker and a reconciler      <- SIGKILLed mid-run
    render-2  10.77.0.22  a render worker and a reconciler
    feed      10.77.0.31  feed workers (2 processes: listing builds coordinate through Redis)
    gateway   10.77.0.41  the read side, serving from the bucket

Every process is configured only through BANTIN_* (and AWS_*) variables; each host has a data
directory of its own that nobody else reads. The operator's CLI (migrations, agencies) runs in
the root namespace and reaches the data host over the bridge. Everything made here is removed
in a `finally` (also on Ctrl-C), and leftovers of an earlier run that crashed (same prefix)
are removed first. Exit status 0 only when every accepted bulletin's page answers 200 with its
title and every feed holds exactly the newest items, without duplicates.
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any

import feedparser
import httpx

from bench.core import Options, Result

NAME = "10 many hosts"
PREFIX = "bt-"
BRIDGE = f"{PREFIX}br0"
NET = "10.77.0"
ROOT_ADDRESS = f"{NET}.1"  # the root namespace, on the bridge
WORKDIR = Path("/tmp") / f"{PREFIX}hosts"  # fixed, so a crashed run's is found and removed
PG_PORT, REDIS_PORT, S3_PORT, INGEST_PORT, GATEWAY_PORT = 5432, 6379, 5000, 8001, 8000
BUCKET = "bantin"
START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 120.0  # every accepted bulletin published, after the kill
FEEDS_TIMEOUT = 60.0  # every feed right (feed builds, reconciler verification every 10 s)
# Posted faster than two render workers keep up with: a backlog builds, so the killed host
# certainly dies holding messages (one running, one prefetched) that must be recovered.
RATE = 60.0
AGENCIES = {"so-y-te-ha-noi": "Sở Y tế Hà Nội", "so-gtvt-da-nang": "Sở GTVT Đà Nẵng"}
CATEGORIES = ["Dịch bệnh", "Giao thông", "Thời tiết", "Giáo dục"]
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Host:
    name: str
    octet: int

    @property
    def ns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def address(self) -> str:
        return f"{NET}.{self.octet}"

    @property
    def veth(self) -> str:  # the root side of its cable (<= 15 characters)
        return f"{PREFIX}v{self.octet}"


DATA, INGEST = Host("data", 10), Host("ingest", 11)
RENDER_1, RENDER_2 = Host("render-1", 21), Host("render-2", 22)
FEED, GATEWAY = Host("feed", 31), Host("gateway", 41)
HOSTS = [DATA, INGEST, RENDER_1, RENDER_2, FEED, GATEWAY]
ROLES = {
    DATA: "PostgreSQL, Redis, S3 (moto)",
    INGEST: "ingest API",
    RENDER_1: "render worker + reconciler",
    RENDER_2: "render worker + reconciler",
    FEED: "feed workers (2 processes)",
    GATEWAY: "gateway (serves the bucket)",
}


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


# --- the network -------------------------------------------------------------------------


def _namespaces() -> list[str]:
    names = (line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line)
    return [name for name in names if name.startswith(PREFIX)]


def _links() -> list[str]:
    """Our interfaces in the root namespace (`bt-v10@if2` is listed as `bt-v10`)."""
    names = []
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            names.append(name)
    return names


def _pids(ns: str) -> list[int]:
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]


def kill_namespace(ns: str, signum: int = signal.SIGKILL) -> int:
    """Send `signum` to every process in the namespace; returns how many."""
    pids = _pids(ns)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signum)
    return len(pids)


def stop_namespaces(namespaces: list[str], signum: int, grace: float = 5.0) -> None:
    """`signum` to every process in them, SIGKILL to what is left after `grace` seconds."""
    for ns in namespaces:
        kill_namespace(ns, signum)
    deadline = time.monotonic() + grace
    while any(_pids(ns) for ns in namespaces) and time.monotonic() < deadline:
        time.sleep(0.1)
    while any(_pids(ns) for ns in namespaces):
        for ns in namespaces:
            kill_namespace(ns, signal.SIGKILL)
        time.sleep(0.1)


def remove_network() -> None:
    """Everything of ours: processes, namespaces, interfaces. Bantin's hosts first, the data
    host last and with SIGINT: PostgreSQL's fast shutdown, Redis's and moto's."""
    namespaces = _namespaces()
    stop_namespaces([ns for ns in namespaces if ns != DATA.ns], signal.SIGTERM)
    stop_namespaces([ns for ns in namespaces if ns == DATA.ns], signal.SIGINT)
    for ns in namespaces:
        sh("ip", "netns", "del", ns, check=False)
    for link in _links():
        sh("ip", "link", "del", link, check=False)


def build_network() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{ROOT_ADDRESS}/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for host in HOSTS:
        inside = f"{PREFIX}p{host.octet}"
        sh("ip", "netns", "add", host.ns)
        sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", inside)
        sh("ip", "link", "set", inside, "netns", host.ns)
        sh("ip", "link", "set", host.veth, "master", BRIDGE, "up")
        sh("ip", "-n", host.ns, "link", "set", inside, "name", "eth0")
        sh("ip", "-n", host.ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", host.ns, "link", "set", "lo", "up")


# --- processes ---------------------------------------------------------------------------


@dataclass
class Launched:
    host: Host
    role: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    launched: list[Launched] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def spawn(
        self, host: Host, role: str, argv: list[str], env: dict[str, str], user: str | None = None
    ) -> Launched:
        log = WORKDIR / "logs" / f"{host.name}.{role}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
        self.logs.append(out)
        as_user = ["runuser", "-u", user, "--"] if user else []
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, *as_user, *argv],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; the finally stops them
        )  # fmt: skip
        launched = Launched(host, role, process, log)
        self.launched.append(launched)
        return launched

    def close(self) -> None:
        for launched in self.launched:
            with suppress(Exception):
                launched.process.wait(1)
        for out in self.logs:
            out.close()


def wait_until(what: str, check: Any, timeout: float, launched: Launched | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if launched is not None and launched.process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited\n{tail(launched.log)}")
        if time.monotonic() > deadline:
            extra = f"\n{tail(launched.log)}" if launched else ""
            raise RuntimeError(f"{what}: not within {timeout:.0f} s{extra}")
        time.sleep(0.2)


def tail(path: Path, lines: int = 25) -> str:
    with suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def http() -> httpx.Client:
    # trust_env=False: a proxy from the environment must not carry our 10.77.0.x requests.
    return httpx.Client(timeout=10, trust_env=False)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return Path(found[-1]).parent


def start_data_host(cluster: Cluster) -> None:
    pg_bin, pgdata = _postgres_bin(), WORKDIR / "pg"
    pgdata.mkdir(parents=True)
    shutil.chown(pgdata, "postgres", "postgres")
    pgdata.chmod(0o700)
    sh("runuser", "-u", "postgres", "--", str(pg_bin / "initdb"), "-D", str(pgdata),
       "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")  # fmt: skip
    with (pgdata / "pg_hba.conf").open("a") as hba:  # every host of the demo's network
        hba.write(f"host all all {NET}.0/24 trust\n")
    env = clean_env()
    # A throwaway database: durability off, so the demo measures Bantin, not the disk.
    postgres = cluster.spawn(DATA, "postgres", [
        str(pg_bin / "postgres"), "-D", str(pgdata), "-c", f"listen_addresses={DATA.address}",
        "-c", f"port={PG_PORT}", "-c", f"unix_socket_directories={pgdata}",
        "-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
    ], env, user="postgres")  # fmt: skip
    redis_dir = WORKDIR / "redis"
    redis_dir.mkdir()
    redis = cluster.spawn(DATA, "redis", [
        shutil.which("redis-server") or str(VENV_BIN / "redis-server"), "--bind", DATA.address,
        "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
        "--protected-mode", "no", "--dir", str(redis_dir),
    ], env)  # fmt: skip
    moto = cluster.spawn(DATA, "s3", [str(VENV_BIN / "moto_server"), "-H", DATA.address,
                                      "-p", str(S3_PORT)], env)  # fmt: skip

    import psycopg
    from redis import Redis

    def pg_up() -> bool:
        url = f"postgresql://postgres@{DATA.address}:{PG_PORT}/postgres"
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as admin:
            admin.execute("CREATE DATABASE bantin")
        return True

    wait_until("PostgreSQL on the data host", pg_up, START_TIMEOUT, postgres)
    redis_url = f"redis://{DATA.address}:{REDIS_PORT}/0"
    wait_until("Redis on the data host", lambda: Redis.from_url(redis_url).ping(), 30, redis)
    with http() as client:
        endpoint = f"http://{DATA.address}:{S3_PORT}"
        wait_until("moto S3 on the data host",
                   lambda: client.get(endpoint).status_code < 500, 60, moto)  # fmt: skip
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test",
                 ).create_bucket(Bucket=BUCKET)  # fmt: skip


def clean_env() -> dict[str, str]:
    """Our environment without any BANTIN_* or proxy setting: each host gets only its own."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BANTIN_") and k.lower() not in {"http_proxy", "https_proxy"}
    }


def host_env(host: Host | None) -> dict[str, str]:
    """What a process on `host` (None: the operator, in the root namespace) is told."""
    data_dir = WORKDIR / "hosts" / (host.name if host else "operator")
    data_dir.mkdir(parents=True, exist_ok=True)
    return clean_env() | {
        "BANTIN_DATA_DIR": str(data_dir),
        "BANTIN_DATABASE_URL": f"postgresql+psycopg://postgres@{DATA.address}:{PG_PORT}/bantin",
        "BANTIN_REDIS_URL": f"redis://{DATA.address}:{REDIS_PORT}/0",
        "BANTIN_STORAGE_URL": f"s3://{BUCKET}/site?endpoint=http://{DATA.address}:{S3_PORT}"
        "&region=us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BANTIN_PUBLIC_URL": f"http://{GATEWAY.address}:{GATEWAY_PORT}",
        "BANTIN_INGEST_HOST": INGEST.address,
        "BANTIN_INGEST_PORT": str(INGEST_PORT),
        "BANTIN_GATEWAY_HOST": GATEWAY.address,
        "BANTIN_GATEWAY_PORT": str(GATEWAY_PORT),
        "BANTIN_METRICS_PORT": "0",  # a render worker and a reconciler share a host
        # A render lost with the killed host is re-sent after this long (default 30 s).
        "BANTIN_REQUEUE_AFTER_SECONDS": "10",
        "BANTIN_RATE_LIMIT": "5000/second",  # the demo writes faster than an agency may
        "NO_PROXY": f"{NET}.0/24,{','.join(h.address for h in HOSTS)}",
    }


def start_bantin(cluster: Cluster) -> dict[Host, list[Launched]]:
    from services.cli.up import uvicorn_argv

    python = [sys.executable, "-m", "services.cli"]
    done = subprocess.run([*python, "db", "upgrade"], env=host_env(None),
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"bantin db upgrade failed:\n{done.stdout}{done.stderr}")
    started: dict[Host, list[Launched]] = {}

    def spawn(host: Host, role: str, argv: list[str]) -> Launched:
        launched = cluster.spawn(host, role, argv, host_env(host))
        started.setdefault(host, []).append(launched)
        return launched

    ingest = spawn(INGEST, "ingest", uvicorn_argv("services.ingest.app:app_from_env",
                                                  INGEST.address, INGEST_PORT))  # fmt: skip
    gateway = spawn(GATEWAY, "gateway", uvicorn_argv("services.gateway.app:app_from_env",
                                                     GATEWAY.address, GATEWAY_PORT))  # fmt: skip
    renders = [spawn(host, "render", [*python, "worker", "render", "-c", "1"])
               for host in (RENDER_1, RENDER_2)]  # fmt: skip
    spawn(FEED, "feed", [*python, "worker", "feed", "-c", "2"])
    for host in (RENDER_1, RENDER_2):
        spawn(host, "reconciler", [*python, "reconciler"])
    with http() as client:
        healthz = [(ingest, f"http://{INGEST.address}:{INGEST_PORT}/healthz"),
                   (gateway, f"http://{GATEWAY.address}:{GATEWAY_PORT}/healthz")]  # fmt: skip
        for launched, url in healthz:
            wait_until(f"{launched.role} on {launched.host.name}",
                       partial(lambda u: client.get(u).status_code == 200, url),
                       START_TIMEOUT, launched)  # fmt: skip
        for launched in renders:
            wait_until(f"render worker on {launched.host.name}",
                       partial(lambda p: " ready." in p.read_text(errors="replace"), launched.log),
                       START_TIMEOUT, launched)  # fmt: skip
        home = f"http://{GATEWAY.address}:{GATEWAY_PORT}/"
        # The reconciler's first verification builds `/` on the feed host, into the bucket.
        wait_until("the home page through the gateway",
                   lambda: client.get(home).status_code == 200, START_TIMEOUT)  # fmt: skip
    return started


# --- the run -----------------------------------------------------------------------------


@dataclass
class Accepted:
    id: int
    agency: str
    category: str
    title: str
    url: str


def create_agencies() -> dict[str, str]:
    keys = {}
    for slug, name in AGENCIES.items():
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "agency", "create", name, "--slug", slug],
            env=host_env(None), capture_output=True, text=True, check=True,
        )  # fmt: skip
        keys[slug] = done.stdout.strip().splitlines()[-1]
    return keys


def published_count() -> int:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Bulletin, BulletinStatus
    from shared.settings import Settings

    settings = Settings(database_url=host_env(None)["BANTIN_DATABASE_URL"])
    with session_scope(settings) as session:
        query = select(func.count()).where(
            Bulletin.status == BulletinStatus.PUBLISHED, Bulletin.pending_since.is_(None)
        )
        return int(session.scalar(query) or 0)


@dataclass
class Kill:
    at_seconds: float = 0.0
    processes: int = 0
    published_before: int = 0
    accepted_before: int = 0
    backlog: int = 0  # render messages waiting in Redis at the kill


def publish(keys: dict[str, str], count: int, rate: float, kill_at: int) -> tuple[
    list[Accepted], list[str], Kill
]:  # fmt: skip
    """`count` bulletins over HTTP to ingest, about `rate` a second from 8 threads; once
    `kill_at` are published, every process of the render-1 host is SIGKILLed."""
    ingest = f"http://{INGEST.address}:{INGEST_PORT}"
    accepted: list[Accepted] = []
    refused: list[str] = []
    lock = threading.Lock()
    kill = Kill()
    rng = random.Random(11)
    plan = [(i, rng.choice(list(keys)), CATEGORIES[i % len(CATEGORIES)]) for i in range(count)]

    clients = threading.local()  # one keep-alive connection per posting thread

    def post(item: tuple[int, str, str]) -> None:
        i, agency, category = item
        time.sleep(max(0.0, started + i / rate - time.monotonic()))  # paced, not a burst
        title = f"Thông báo số {i + 1}/{count} của {AGENCIES[agency]} — {category}"
        body = {"title": title, "body": f"Nội dung bản tin {i + 1}.\n\nHết.", "category": category}
        if not hasattr(clients, "client"):
            clients.client = http()
        client = clients.client
        response = client.post(f"{ingest}/v1/bulletins", json=body,
                               headers={"Authorization": f"Bearer {keys[agency]}"})  # fmt: skip
        with lock:
            if response.status_code == 202:
                answer = response.json()
                accepted.append(Accepted(answer["id"], agency, category, title, answer["url"]))
            else:
                refused.append(f"{response.status_code} {response.text[:200]}")

    def killer() -> None:
        next_report = 0.0
        while not kill.processes and time.monotonic() - started < 60:
            published = published_count()
            elapsed = time.monotonic() - started
            if elapsed >= next_report:
                say(f"  {elapsed:4.1f} s: {len(accepted)} accepted, {published} published")
                next_report = elapsed + 2
            # Once a backlog waits in the render queue, each render host holds a message
            # unacknowledged (acks late): the kill loses it, and the database must bring it back.
            backlog = int(Redis.from_url(redis_url).llen("render"))
            if published >= kill_at and (backlog >= 3 or published >= 2 * kill_at):
                with lock:
                    kill.accepted_before = len(accepted)
                kill.processes = kill_namespace(RENDER_1.ns, signal.SIGKILL)
                kill.published_before, kill.backlog = published, backlog
                kill.at_seconds = time.monotonic() - started
                say(f"SIGKILLed all {kill.processes} processes of host render-1 "
                    f"({RENDER_1.address}) at {kill.at_seconds:.1f} s: "
                    f"{kill.published_before} published, "
                    f"{kill.accepted_before} accepted, {kill.backlog} renders queued")  # fmt: skip
                return
            time.sleep(0.05)

    from redis import Redis

    redis_url = host_env(None)["BANTIN_REDIS_URL"]
    published_count()  # imports and connects before the clock matters
    watcher = threading.Thread(target=killer, daemon=True)
    started = time.monotonic()
    watcher.start()
    pool = ThreadPoolExecutor(12)
    try:
        list(pool.map(post, plan))
    finally:  # interrupted: drop the posts not yet started rather than wait for them
        pool.shutdown(wait=True, cancel_futures=True)
    watcher.join(60)
    return accepted, refused, kill


def wait_published(accepted: list[Accepted], timeout: float) -> float:
    started = time.monotonic()
    wait_until(f"all {len(accepted)} accepted bulletins published",
               lambda: published_count() >= len(accepted), timeout)  # fmt: skip
    return time.monotonic() - started


def log_lines(host: Host, role: str, *needles: str) -> int:
    """Lines of a host's process log holding every one of `needles`."""
    with suppress(OSError):
        text = (WORKDIR / "logs" / f"{host.name}.{role}.log").read_text(errors="replace")
        return sum(all(n in line for n in needles) for line in text.splitlines())
    return 0


def check_pages(accepted: list[Accepted]) -> list[str]:
    def check(item: Accepted) -> str | None:
        with http() as client:
            response = client.get(item.url)
        if response.status_code != 200:
            return f"{item.url}: {response.status_code}"
        if html.escape(item.title, quote=False) not in response.text:
            return f"{item.url}: title missing"
        return None

    with ThreadPoolExecutor(8) as pool:
        return [problem for problem in pool.map(check, accepted) if problem]


def expected_feeds(accepted: list[Accepted]) -> dict[str, list[str]]:
    """Feed path -> the page URLs of the newest items it must hold, from the database."""
    from shared.db import session_scope
    from shared.listings import all_listings, newest_versions
    from shared.settings import Settings
    from shared.site import FEED_FORMATS

    settings = Settings(database_url=host_env(None)["BANTIN_DATABASE_URL"])
    urls = {item.id: item.url for item in accepted}
    expected = {}
    with session_scope(settings) as session:
        for listing in all_listings(session):
            newest = [urls.get(i, f"?{i}") for i, _rev in
                      newest_versions(session, listing, settings.feed_items)]  # fmt: skip
            for fmt in FEED_FORMATS:
                expected[listing.feed_path(fmt)] = newest
    return expected


def feed_links(client: httpx.Client, path: str) -> list[str]:
    response = client.get(f"http://{GATEWAY.address}:{GATEWAY_PORT}{path}")
    if response.status_code != 200:
        raise ValueError(f"{response.status_code}")
    if path.endswith(".json"):
        return [item["url"] for item in json.loads(response.content)["items"]]
    parsed = feedparser.parse(response.content)
    if parsed.bozo:
        raise ValueError(f"unparsable: {parsed.get('bozo_exception')}")
    return [entry.link for entry in parsed.entries]


def check_feeds(accepted: list[Accepted]) -> tuple[int, list[str]]:
    expected = expected_feeds(accepted)
    problems = []
    with http() as client:
        for path, newest in sorted(expected.items()):
            try:
                links = feed_links(client, path)
            except (ValueError, httpx.HTTPError) as exc:
                problems.append(f"{path}: {exc}")
                continue
            duplicates = [link for link, n in Counter(links).items() if n > 1]
            if duplicates:
                problems.append(f"{path}: {len(duplicates)} duplicated items")
            elif links != newest:
                problems.append(f"{path}: {len(set(newest) - set(links))} of the newest "
                                f"{len(newest)} missing, or out of order")  # fmt: skip
    return len(expected), problems


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def namespaces_owned() -> Iterator[None]:
    """The network and the work directory exist inside the block only (also on Ctrl-C)."""
    leftovers = _namespaces() + _links()
    if leftovers:
        say(f"removing leftovers of an earlier run: {', '.join(leftovers)}")
    remove_network()
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir(parents=True)
    # Ctrl-C and SIGTERM both end in the finally (SIGINT explicitly: a shell starting us in
    # the background would have us ignore it).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        build_network()
        yield
    finally:
        say("cleaning up: stopping every process, removing namespaces and interfaces")
        remove_network()
        for name in ("pg", "redis", "hosts"):  # the logs stay until the next run
            shutil.rmtree(WORKDIR / name, ignore_errors=True)
        with suppress(OSError):  # gone too when no log was kept
            WORKDIR.rmdir()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Outcome:
    ok: bool
    accepted: int
    refused: int
    seconds: float
    lines: list[str]


def demo(count: int) -> Outcome:
    if os.geteuid() != 0:
        raise RuntimeError("the many-hosts demo needs root (ip netns); run it with sudo")
    started = time.monotonic()
    lines: list[str] = []
    cluster = Cluster()
    ok = False
    with namespaces_owned():
        try:
            say(f"network: bridge {BRIDGE} {ROOT_ADDRESS}/24 (root namespace: operator, clients)")
            for host in HOSTS:
                say(f"  host {host.name:<9} {host.ns:<12} {host.address:<11} {ROLES[host]}")
            start_data_host(cluster)
            say(f"data host up: PostgreSQL {DATA.address}:{PG_PORT}, Redis "
                f"{DATA.address}:{REDIS_PORT}, S3 http://{DATA.address}:{S3_PORT} "
                f"bucket {BUCKET}")  # fmt: skip
            start_bantin(cluster)
            say(f"Bantin up on 5 hosts in {time.monotonic() - started:.1f} s "
                "(migrations run by the operator in the root namespace)")  # fmt: skip
            keys = create_agencies()
            say(f"agencies created with the CLI: {', '.join(keys)}")
            t0 = time.monotonic()
            accepted, refused, kill = publish(keys, count, rate=RATE, kill_at=count // 10)
            say(f"published over HTTP: {len(accepted)} accepted, {len(refused)} refused, "
                f"in {time.monotonic() - t0:.1f} s")  # fmt: skip
            settle = wait_published(accepted, SETTLE_TIMEOUT)
            say(f"all {len(accepted)} accepted bulletins published "
                f"{time.monotonic() - t0:.1f} s after the first post "
                f"({settle:.1f} s after the last)")  # fmt: skip
            rendered = {host.name: log_lines(host, "render", "services.render.jobs: published")
                        for host in (RENDER_1, RENDER_2)}  # fmt: skip
            resent = sum(log_lines(host, "reconciler", "re-sent a render owed too long")
                         for host in (RENDER_1, RENDER_2))  # fmt: skip
            work = (f"renders done: render-1 {rendered['render-1']} (before it died), "
                    f"render-2 {rendered['render-2']}; renders re-sent by the reconcilers "
                    f"(owed > 10 s): {resent}")  # fmt: skip
            say(work)
            page_problems = check_pages(accepted)
            say(f"pages through the gateway: {len(accepted) - len(page_problems)}/"
                f"{len(accepted)} answer 200 with their title")  # fmt: skip
            feeds, feed_problems = 0, ["not checked"]
            deadline = time.monotonic() + FEEDS_TIMEOUT
            while feed_problems and time.monotonic() < deadline:
                feeds, feed_problems = check_feeds(accepted)
                if feed_problems:
                    time.sleep(1)
            say(f"feeds through the gateway: {feeds - len(feed_problems)}/{feeds} hold exactly "
                "the newest items, in order, without duplicates")  # fmt: skip
            for problem in (refused + page_problems + feed_problems)[:20]:
                say(f"  PROBLEM {problem}")
            ok = bool(kill.processes) and not refused and not page_problems and not feed_problems
            lines = [
                f"hosts: {', '.join(f'{h.name}={h.address}' for h in HOSTS)}",
                f"bulletins: {len(accepted)} accepted, {len(refused)} refused",
                f"killed: render-1 ({RENDER_1.address}), {kill.processes} processes "
                f"(render worker + reconciler) with SIGKILL at {kill.at_seconds:.1f} s, "
                f"when {kill.published_before} were published, {kill.accepted_before} accepted "
                f"and {kill.backlog} renders queued",
                work,
                f"pages: {len(accepted) - len(page_problems)}/{len(accepted)} 200 with title",
                f"feeds: {feeds - len(feed_problems)}/{feeds} correct (all, 2 agencies, "
                f"{len(CATEGORIES)} categories; rss, atom, json)",
                f"time: {time.monotonic() - started:.1f} s in all",
            ]
            if not kill.processes:
                lines.append("the kill never happened (nothing published in time)")
            return Outcome(ok, len(accepted), len(refused), time.monotonic() - started, lines)
        finally:
            cluster.close()
            if ok:
                shutil.rmtree(WORKDIR / "logs", ignore_errors=True)
            else:
                say(f"FAILED or interrupted; the processes' logs are kept in {WORKDIR / 'logs'}")


def run(options: Options) -> list[Result]:
    """As a `python -m bench` scenario: raises when any page or feed is wrong."""
    count = options.size or (100 if options.quick else 300)
    outcome = demo(count)
    print("\n".join(["", "== many-hosts demo: summary", *outcome.lines,
                     f"result: {'PASS' if outcome.ok else 'FAIL'}"]), flush=True)  # fmt: skip
    if not outcome.ok:
        raise RuntimeError("many-hosts demo: " + "; ".join(outcome.lines))
    note = "6 namespaces, PostgreSQL + Redis + S3 shared, render host SIGKILLed mid-run"
    return [
        Result(
            NAME,
            "bulletins accepted, all pages and feeds correct",
            float(outcome.accepted),
            "bulletins",
            note=note,
        ),  # fmt: skip
        Result(NAME, "demo wall time", outcome.seconds, "s", note="noisy, machine shared"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hosts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=300, help="bulletins to publish")
    args = parser.parse_args(argv)
    try:
        run(Options(size=args.size))
    except KeyboardInterrupt:
        print("interrupted; everything removed", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"many-hosts demo FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
