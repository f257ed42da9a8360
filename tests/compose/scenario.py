"""The offline compose scenario (issue 13), run by tests/compose/run.sh once the base images exist.

docker-compose.yml plus deploy/compose/offline.yml, as project `bantin-compose-test`:
  1. build the app image (the Dockerfile, BASE_IMAGE = the offline Python image);
  2. up with --scale render=4 --scale feed=2, every healthcheck healthy, migrations run;
  3. through 127.0.0.1 only (nginx: the site and the ingest API): an agency made with the CLI
     inside the ingest container, the sample published, its page, the feeds and a 304;
  4. 300 bulletins at 30/s while one render and one feed container are killed and Redis is
     restarted: every accepted bulletin published (the status API), every page 200, no feed
     item twice, the monthly archives hold every bulletin exactly once;
  5. render scaled 4 -> 1 -> 3 while publishing: nothing lost;
  6. `down -v`: no container, network or volume of the project left.
Every wait is bounded; on a failure the failing step, what it saw and the logs of the
services involved are printed. Exit status 0 only when every check passed.
"""

from __future__ import annotations

import html
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import feedparser
import httpx

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "bantin-compose-test"
SITE = os.environ.get("BANTIN_COMPOSE_SITE", "127.0.0.1:18080")
API = os.environ.get("BANTIN_COMPOSE_API", "127.0.0.1:18081")
SITE_URL, API_URL = f"http://{SITE}", f"http://{API}"
SAMPLE = ROOT / "examples" / "000_4fbfac1c975a2018.txt"
AGENCY_NAME, AGENCY = "UBND tỉnh Bắc Kạn", "bac-kan"
LOAD_COUNT, LOAD_RATE = 300, 30.0
# Long enough (60 s) to span both scalings: compose stops a worker gracefully (up to 10 s).
SCALE_COUNT, SCALE_RATE = 240, 4.0
FEED_ITEMS = 50  # Settings.feed_items: a feed holds the newest 50
UP_TIMEOUT = 420.0  # first start: PostgreSQL's initdb, migrations, every healthcheck
PUBLISH_TIMEOUT = 300.0  # a render lost with a killed worker is re-sent after 30 s
CONVERGE_TIMEOUT = 180.0  # feeds and archives rebuilt after the last publication
COMPOSE_TIMEOUT = 600.0  # any one docker-compose command
REDIS_BACK_TIMEOUT = 60.0  # Redis answering PONG again after `restart redis`
# After Redis answers again, ingest's pooled connections to the old server fail once each
# before reconnecting: a 503 that late is still the restart's.
REDIS_RECONNECT_GRACE = 5.0


class Failed(Exception):
    """A check failed: the message says which and what was seen."""


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def compose_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.pop("POSTGRES_PASSWORD", None)  # the `secrets` one-shot makes a random one
    return env | {
        "BANTIN_IMAGE": f"{PROJECT}:latest",  # never a user's bantin:latest
        "SITE_PORT": SITE,
        "API_PORT": API,
        "BANTIN_PUBLIC_URL": SITE_URL,
        "BANTIN_INGEST_PUBLIC_URL": API_URL,
        # One process per worker container: scaling is by container count here, on 2 cores.
        "RENDER_CONCURRENCY": "1",
        "GATEWAY_WORKERS": "1",
        "DELIVER_CONCURRENCY": "2",
    }


EMPTY_ENV_FILE = ROOT / "var" / "compose-test" / "empty.env"  # no local .env changes the run


def compose(*args: str, check: bool = True, timeout: float = COMPOSE_TIMEOUT) -> str:
    argv = ["docker-compose", "--env-file", str(EMPTY_ENV_FILE), "-p", PROJECT,
            "-f", "docker-compose.yml", "-f", "deploy/compose/offline.yml", *args]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env=compose_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    if check and done.returncode:
        raise Failed(f"docker-compose {' '.join(args)} exited {done.returncode}:\n"
                     f"{done.stdout[-3000:]}{done.stderr[-3000:]}")  # fmt: skip
    return done.stdout


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise Failed(f"docker {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


def wait_until(what: str, check: Callable[[], object], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last = exc
        if last is True:
            return
        time.sleep(every)
    raise Failed(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")


# --- containers ----------------------------------------------------------------------------


def containers(service: str | None = None, every: bool = False) -> list[dict[str, Any]]:
    """The project's containers (`docker inspect` documents), of one service or all."""
    label = [f"--filter=label=com.docker.compose.project={PROJECT}"]
    if service:
        label.append(f"--filter=label=com.docker.compose.service={service}")
    ids = docker("ps", "-q", *(["-a"] if every else []), *label).split()
    return json.loads(docker("inspect", *ids)) if ids else []


def service_of(container: dict[str, Any]) -> str:
    return str(container["Config"]["Labels"]["com.docker.compose.service"])


def unhealthy() -> list[str]:
    """Running containers not (yet) healthy, and one-shots that did not exit 0."""
    problems = []
    for c in containers(every=True):
        name, state = c["Name"].lstrip("/"), c["State"]
        if service_of(c) in {"migrate", "secrets"}:
            if state["Status"] != "exited" or state["ExitCode"] != 0:
                problems.append(f"{name}: {state['Status']} (exit {state['ExitCode']})")
        elif state["Status"] != "running":
            problems.append(f"{name}: {state['Status']}")
        elif state.get("Health", {}).get("Status") != "healthy":
            problems.append(f"{name}: {state.get('Health', {}).get('Status')}")
    return problems


def wait_healthy(timeout: float) -> None:
    def check() -> bool | list[str]:
        problems = unhealthy()
        return True if not problems else problems

    wait_until("every container healthy", check, timeout, every=3)


def running(service: str) -> list[str]:
    return sorted(c["Name"].lstrip("/") for c in containers(service))


# --- the API and the site ------------------------------------------------------------------


def http() -> httpx.Client:
    return httpx.Client(timeout=15, trust_env=False)  # 127.0.0.1 only, never a proxy


@dataclass
class Accepted:
    id: int
    title: str
    url: str


def create_agency() -> str:
    out = compose("exec", "-T", "ingest", "bantin", "agency", "create", AGENCY_NAME,
                  "--slug", AGENCY)  # fmt: skip
    return out.strip().splitlines()[-1].strip()


def publish_sample(key: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from zoneinfo import ZoneInfo

    from services.cli.client import load_bulletin, publish

    bulletin = load_bulletin(SAMPLE, ZoneInfo("Asia/Ho_Chi_Minh"))
    return publish(bulletin, api_url=API_URL, key=key, wait_seconds=120)


def feed_ids(client: httpx.Client, path: str) -> list[str]:
    """The item ids (guids) of a feed or archive through nginx; ValueError if not 200."""
    response = client.get(f"{SITE_URL}{path}")
    if response.status_code != 200:
        raise ValueError(f"{path}: {response.status_code}")
    if path.endswith(".json"):
        return [str(item["id"]) for item in json.loads(response.content)["items"]]
    parsed = feedparser.parse(response.content)
    if parsed.bozo:
        raise ValueError(f"{path}: unparsable: {parsed.get('bozo_exception')}")
    return [str(entry.id) for entry in parsed.entries]


def check_sample(document: dict[str, Any]) -> None:
    with http() as client:
        page = client.get(document["url"])
        if page.status_code != 200 or html.escape(document["title"], quote=False) not in page.text:
            raise Failed(f"sample page {document['url']}: {page.status_code}, title missing?")
        etag = page.headers.get("etag")
        if not etag:
            raise Failed(f"sample page without ETag: {dict(page.headers)}")
        again = client.get(document["url"], headers={"If-None-Match": etag})
        if again.status_code != 304:
            raise Failed(f"If-None-Match {etag}: {again.status_code}, expected 304")
        say(f"sample page 200 ({page.headers.get('server')}), then 304 on its ETag {etag}")
        for path in (f"/feeds/agency/{AGENCY}", "/feeds/all"):
            for fmt in ("rss", "atom", "json"):

                def holds(feed: str = f"{path}.{fmt}") -> bool | str:
                    return document["guid"] in feed_ids(client, feed) or f"not yet in {feed}"

                wait_until(f"{path}.{fmt} holding the sample", holds, CONVERGE_TIMEOUT)
        say("the sample is in the agency's and the site's RSS, Atom and JSON feeds")


@dataclass
class Window:
    """When ingest may refuse posts (monotonic seconds): set by the event that causes it."""

    what: str
    start: float | None = None
    end: float | None = None

    def holds(self, sent: float, answered: float) -> bool:
        """Whether a request sent and answered at these times overlaps the window."""
        if self.start is None:
            return False
        end = (self.end if self.end is not None else time.monotonic()) + REDIS_RECONNECT_GRACE
        return sent <= end and answered >= self.start


@dataclass
class Refusal:
    index: int
    sent: float
    answered: float
    status: int | None  # None: no HTTP answer at all
    problem: bool  # an application/problem+json body whose `status` is the HTTP status
    detail: str

    def line(self, started: float) -> str:
        return (f"#{self.index} at {self.sent - started:.1f}-{self.answered - started:.1f} s: "
                f"{self.status} {self.detail}")  # fmt: skip


@dataclass
class Event:
    """Something done mid-flow (a kill, a restart, a scaling), in its own thread."""

    name: str
    run: Callable[[], None]
    outcome: str | None = None  # None: did not run (or did not finish)
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        def guarded() -> None:
            try:
                self.run()
                self.outcome = "ok"
            except BaseException as exc:  # reported by post_paced, the scenario fails
                self.outcome = f"failed: {type(exc).__name__}: {str(exc)[:600]}"

        self.thread = threading.Thread(target=guarded, name=self.name, daemon=True)
        self.thread.start()


def refusal_of(i: int, sent: float, response: httpx.Response) -> Refusal:
    problem = False
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        try:
            problem = json.loads(response.content).get("status") == response.status_code
        except (ValueError, AttributeError):
            problem = False
    return Refusal(i, sent, time.monotonic(), response.status_code, problem,
                   response.text[:160].replace("\n", " "))  # fmt: skip


def post_paced(key: str, count: int, rate: float, label: str,
               events: dict[int, Event] | None = None,
               refusal_window: Window | None = None) -> list[Accepted]:  # fmt: skip
    """`count` bulletins, about `rate` a second from 8 threads; `events[i]` starts (in its own
    thread) when bulletin i is due: kills, restarts and scalings mid-flow. Fails unless every
    event ran and succeeded, and unless every post was accepted except 503 problem answers
    overlapping `refusal_window` (a dependency down: what ingest says while Redis restarts)."""
    events = events or {}
    accepted: list[Accepted] = []
    refused: list[Refusal] = []
    lock = threading.Lock()
    local = threading.local()
    started = time.monotonic()

    def post(i: int) -> None:
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        if i in events:
            events[i].start()
        if not hasattr(local, "client"):
            local.client = http()
        title = f"Bản tin thử {label} số {i + 1}/{count}"
        body = {"title": title, "body": f"Nội dung bản tin {label} {i + 1}.\n\nHết.",
                "category": ["Dịch bệnh", "Giao thông", "Thời tiết"][i % 3]}  # fmt: skip
        sent = time.monotonic()
        try:
            response = local.client.post(f"{API_URL}/v1/bulletins", json=body,
                                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        except httpx.HTTPError as exc:
            with lock:
                refused.append(Refusal(i, sent, time.monotonic(), None, False, repr(exc)))
            return
        with lock:
            if response.status_code == 202:
                answer = response.json()
                accepted.append(Accepted(int(answer["id"]), title, answer["url"]))
            else:
                refused.append(refusal_of(i, sent, response))

    pool = ThreadPoolExecutor(8)
    try:
        list(pool.map(post, range(count)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on SIGTERM: no post after this
    deadline = time.monotonic() + COMPOSE_TIMEOUT
    for event in events.values():
        if event.thread is not None:
            event.thread.join(max(0.0, deadline - time.monotonic()))
    took = time.monotonic() - started

    allowed = [r for r in refused if r.status == 503 and r.problem and refusal_window
               and refusal_window.holds(r.sent, r.answered)]  # fmt: skip
    wrong = [r for r in refused if r not in allowed]
    window = ""
    if refusal_window is not None and refusal_window.start is not None:
        end = refusal_window.end
        window = (f"; {refusal_window.what}: {refusal_window.start - started:.1f}-"
                  + (f"{end - started:.1f} s" if end is not None else "(no end)"))  # fmt: skip
    say(f"{label}: {len(accepted)} accepted, {len(refused)} refused ({len(allowed)} of them "
        f"503 problem answers in the allowed window) in {took:.1f} s{window}")  # fmt: skip
    for r in refused[:10]:
        say(f"  refused {r.line(started)}")
    for index, event in sorted(events.items()):
        say(f"  event at #{index} ({event.name}): {event.outcome or 'did not run or finish'}")

    bad_events = [f"{e.name}: {e.outcome or 'did not run or finish'}" for e in events.values()
                  if e.outcome != "ok"]  # fmt: skip
    if bad_events:
        raise Failed(f"{label}: mid-flow events went wrong: {bad_events}")
    if wrong:
        allowed_what = refusal_window.what if refusal_window else "nothing"
        raise Failed(f"{label}: {len(wrong)} posts refused outside what is allowed (503 "
                     f"problem answers during {allowed_what}): "
                     f"{[r.line(started) for r in wrong[:5]]}")  # fmt: skip
    return accepted


def statuses(key: str, items: list[Accepted]) -> dict[int, str]:
    def one(item: Accepted) -> tuple[int, str]:
        with http() as client:
            response = client.get(f"{API_URL}/v1/bulletins/{item.id}",
                                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        if response.status_code != 200:
            return item.id, f"HTTP {response.status_code}"
        document = response.json()
        done = document["status"] == "published" and (
            document["rendered_revision"] == document["revision"]
        )
        return item.id, "published" if done else str(document["status"])

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, items))


def wait_all_published(key: str, items: list[Accepted], timeout: float) -> float:
    started = time.monotonic()
    pending = list(items)

    def check() -> bool | str:
        nonlocal pending
        seen = statuses(key, pending)
        pending = [item for item in pending if seen[item.id] != "published"]
        counts = Counter(seen[item.id] for item in pending)
        return True if not pending else f"{len(pending)} not published: {dict(counts)}"

    wait_until(f"all {len(items)} accepted bulletins published", check, timeout, every=3)
    return time.monotonic() - started


def check_pages(items: list[Accepted]) -> None:
    def one(item: Accepted) -> str | None:
        with http() as client:
            response = client.get(item.url)
        if response.status_code != 200:
            return f"{item.url}: {response.status_code}"
        if html.escape(item.title, quote=False) not in response.text:
            return f"{item.url}: title missing"
        return None

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(one, items) if p]
    if problems:
        raise Failed(f"{len(problems)} of {len(items)} pages wrong: {problems[:5]}")
    say(f"all {len(items)} pages answer 200 with their title through nginx")


def archive_ids(client: httpx.Client, month: str) -> list[str]:
    """Every entry of the agency's archive for `month` (UTC), all parts, in Atom."""
    ids: list[str] = []
    for part in range(1, 100):
        name = month if part == 1 else f"{month}-{part}"
        try:
            ids += feed_ids(client, f"/feeds/agency/{AGENCY}/{name}.atom")
        except ValueError:
            if part == 1:
                return ids  # no archive for this month (nothing published then)
            break
    return ids


def check_feeds(published: dict[str, str]) -> None:
    """Agency feeds: unique items, the newest `FEED_ITEMS`, all known; archives: every
    bulletin exactly once. `published` maps each guid the agency published to its month."""
    newest_ids: list[str] = []
    month_list = sorted(set(published.values()))

    def current() -> bool | str:
        with http() as client:
            for fmt in ("rss", "atom", "json"):
                ids = feed_ids(client, f"/feeds/agency/{AGENCY}.{fmt}")
                twice = [i for i, n in Counter(ids).items() if n > 1]
                if twice:
                    raise Failed(f"/feeds/agency/{AGENCY}.{fmt}: duplicated items {twice[:3]}")
                unknown = set(ids) - published.keys()
                if unknown:
                    return f"{fmt}: {len(unknown)} unknown items"
                if len(ids) != min(FEED_ITEMS, len(published)):
                    return f"{fmt}: {len(ids)} items"
                if newest_ids and ids != newest_ids:
                    return f"{fmt} differs from the rss feed"
                newest_ids[:] = ids
            archived = [i for month in month_list for i in archive_ids(client, month)]
        twice = [i for i, n in Counter(archived).items() if n > 1]
        if twice:
            raise Failed(f"archives: duplicated items {twice[:3]}")
        missing = published.keys() - set(archived)
        return True if not missing else f"archives of {month_list}: {len(missing)} missing"

    wait_until("the agency's feeds and archives", current, CONVERGE_TIMEOUT, every=3)
    say(
        f"agency feeds (rss, atom, json): the same {len(newest_ids)} unique items; archives "
        f"{month_list}: all {len(published)} bulletins, each once"
    )


def guids(key: str, items: list[Accepted]) -> dict[str, str]:
    """guid -> the month (UTC) of its archive, from the status API."""

    def one(item: Accepted) -> tuple[str, str]:
        with http() as client:
            response = client.get(f"{API_URL}/v1/bulletins/{item.id}",
                                  headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        response.raise_for_status()
        document = response.json()
        return str(document["guid"]), month_of(document["published_at"])

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, items))


def month_of(published_at: str) -> str:
    return datetime.fromisoformat(published_at).astimezone(UTC).strftime("%Y-%m")


# --- the scenario --------------------------------------------------------------------------


def ports_free() -> None:
    for address in (SITE, API):
        host, port = address.rsplit(":", 1)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, int(port)))
            except OSError as exc:
                raise Failed(f"{address} is taken ({exc}): set BANTIN_COMPOSE_SITE/_API") from None


def leftovers() -> list[str]:
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind, args in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"]),
                       ("volume", ["volume", "ls", "-q"])):  # fmt: skip
        found += [f"{kind} {x}" for x in docker(*args, f"--filter={label}").split()]
    return found


def print_logs(services: list[str]) -> None:
    for service in services:
        print(f"----- logs: {service} (last 40 lines) -----", flush=True)
        print(compose("logs", "--no-color", "--tail=40", service, check=False), flush=True)


def scenario(timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    compose("build", "migrate")  # every app service shares this one image
    timings["build app image"] = time.monotonic() - t0
    say(f"app image {PROJECT}:latest built in {timings['build app image']:.0f} s")

    t0 = time.monotonic()
    compose("up", "-d", "--no-build", "--scale", "render=4", "--scale", "feed=2")
    wait_healthy(UP_TIMEOUT)
    timings["up, every healthcheck healthy"] = time.monotonic() - t0
    say(f"up and healthy in {timings['up, every healthcheck healthy']:.0f} s")
    compose("run", "--rm", "migrate")  # again: a no-op on an up-to-date schema, exits 0
    say("migrate service: ran at start (exit 0), run again: exit 0")
    ps = compose("ps")
    print(ps, flush=True)
    if len(running("render")) != 4 or len(running("feed")) != 2:
        raise Failed(f"render {running('render')}, feed {running('feed')}")

    key = create_agency()
    say(f"agency {AGENCY} made with the CLI in the ingest container (key {key[:6]}…)")
    sample = publish_sample(key)
    say(f"sample published: {sample['url']}")
    check_sample(sample)

    # Step 4: the kills and the Redis restart land while bulletins are being posted.
    victims = {"render": running("render")[0], "feed": running("feed")[0]}

    def kill(service: str) -> Callable[[], None]:
        def run() -> None:
            docker("kill", victims[service])
            say(f"docker kill {victims[service]}")

        return run

    restarting = Window("the Redis restart")
    redis = running("redis")[0]

    def restart_redis() -> None:
        say("docker-compose restart redis ...")
        restarting.start = time.monotonic()
        try:
            compose("restart", "redis")
            # The window ends when Redis answers again, not when its container is started.
            wait_until("Redis answering PONG after its restart",
                       lambda: "PONG" in docker("exec", redis, "redis-cli", "ping", check=False),
                       REDIS_BACK_TIMEOUT, every=0.2)  # fmt: skip
        finally:
            restarting.end = time.monotonic()
        say(f"redis restarted, answering again after {restarting.end - restarting.start:.1f} s")

    events = {60: Event("docker kill render", kill("render")),
              120: Event("docker kill feed", kill("feed")),
              180: Event("docker-compose restart redis", restart_redis)}  # fmt: skip
    accepted = post_paced(key, LOAD_COUNT, LOAD_RATE, "tải", events, restarting)
    took = wait_all_published(key, accepted, PUBLISH_TIMEOUT)
    timings["300 published after the last post"] = took
    say(
        f"every one of the {len(accepted)} accepted bulletins published ({took:.0f} s after "
        "the last post)"
    )
    check_pages(accepted)
    # Everything the agency published so far, the sample (dated 2020: its own month) included.
    published = guids(key, accepted) | {str(sample["guid"]): month_of(sample["published_at"])}
    check_feeds(published)
    # A killed container stays down (`docker kill` is a manual stop for the restart policy):
    # the operator's `up` with the same scale starts it again.
    compose("up", "-d", "--no-build", "--scale", "render=4", "--scale", "feed=2")
    wait_healthy(UP_TIMEOUT)
    say(f"killed containers back: render {running('render')}, feed {running('feed')}")

    # Step 5: render 4 -> 1 -> 3 while publishing, one scaling after the other.
    seen_during: list[int] = []

    def scale_down_and_up() -> None:
        for n in (1, 3):
            compose("up", "-d", "--no-build", "--scale", f"render={n}", "--scale", "feed=2")
            seen_during.append(len(running("render")))
            say(f"scaled render to {n}: {running('render')}")

    # Scaling render must not cost a single post: no refusal is allowed here.
    more = post_paced(key, SCALE_COUNT, SCALE_RATE, "co giãn",
                      {8: Event("scale render 4 -> 1 -> 3", scale_down_and_up)})  # fmt: skip
    if seen_during != [1, 3]:
        raise Failed(f"render containers after scaling to 1, then 3: {seen_during}")
    wait_all_published(key, more, PUBLISH_TIMEOUT)
    if len(running("render")) != 3:
        raise Failed(f"expected 3 render containers, found {running('render')}")
    check_pages(more)
    published |= guids(key, more)
    check_feeds(published)
    say(f"scaling: {len(more)} accepted, all published; render now {running('render')}")
    print(compose("ps"), flush=True)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a CI timeout, run.sh stopped) ends the run through `finally`: `down -v`."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    EMPTY_ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    EMPTY_ENV_FILE.write_text("")
    timings: dict[str, float] = {}
    say(f"removing any leftovers of an earlier run of project {PROJECT}")
    compose("down", "-v", "--remove-orphans", check=False)
    ok = False
    try:
        ports_free()
        scenario(timings)
        ok = True
    except (Failed, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        say(f"FAILED: {exc}")
        with_problems = sorted({service_of(c) for c in containers(every=True)})
        print_logs(with_problems)
        print(compose("ps", check=False), flush=True)
    except SystemExit:
        say("FAILED: stopped by SIGTERM; taking the project down")
        raise
    finally:
        t0 = time.monotonic()
        try:
            compose("down", "-v", "--remove-orphans", check=False)
        except (subprocess.TimeoutExpired, OSError) as exc:
            say(f"FAILED: docker-compose down -v: {exc}")
            ok = False
        timings["down -v"] = time.monotonic() - t0
        try:
            left = leftovers()
        except (Failed, subprocess.TimeoutExpired, OSError) as exc:
            left = [f"(could not list them: {exc})"]
        if left:
            say(f"FAILED: left after down -v: {left}")
            ok = False
        else:
            say("down -v: no container, network or volume of the project left")
    for what, seconds in timings.items():
        say(f"time: {what}: {seconds:.0f} s")
    say("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
