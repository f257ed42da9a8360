"""WebSub deliveries are at-least-once: the deliver worker SIGKILLed mid-delivery, and Redis
restarted empty while deliveries are owed; after each, every subscriber gets the latest feed,
correctly signed.

Real processes (`bantin up`: ingest, feed and deliver workers, reconciler, its own private
embedded Redis, which `bantin up` restarts empty when it dies) and real subscribers on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from shared.db import session_factory
from shared.models import Subscription, SubscriptionState
from shared.testing import System, eventually, start_system, stop_system
from tests.faults.checks import report
from tests.faults.conftest import FAULT_ENV

SUBSCRIBERS = 40  # more than the deliver worker's 16 threads: some deliveries wait in Redis
HOLD_SECONDS = 60.0  # the longest a held push waits to be let go (a bound, not a measure)
RECOVERY_SECONDS = 120.0  # bounds every wait for recovery
ATOM = {"atom": "http://www.w3.org/2005/Atom"}


@dataclass
class Push:
    body: bytes
    signature: str


@dataclass
class Subscribers:
    """One loopback server standing for SUBSCRIBERS subscribers (path /s/<i>). Echoes intent
    checks; records pushes it answers 2xx. While `holding`, pushes are held until `let_go`;
    held ones then either crash (`drop_held`: no answer, nothing recorded, as a subscriber that
    died mid-request) or are answered and recorded."""

    server: ThreadingHTTPServer
    secrets: dict[str, str]
    pushes: dict[str, list[Push]] = field(default_factory=dict)
    holding: bool = False
    drop_held: bool = False
    held: int = 0
    let_go: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def has(self, path: str, guid: str) -> bool:
        """A push to `path` was answered with the feed listing `guid`, signed right."""
        key = self.secrets[path].encode()
        for push in list(self.pushes.get(path, [])):
            expected = "sha256=" + hmac.new(key, push.body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(push.signature, expected) and guid in entry_ids(push.body):
                return True
        return False

    def missing(self, guid: str) -> list[str]:
        return [path for path in self.secrets if not self.has(path, guid)]


def entry_ids(body: bytes) -> list[str]:
    root = etree.fromstring(body)
    return [e.findtext("atom:id", namespaces=ATOM) or "" for e in root.iterfind("atom:entry", ATOM)]


def start_subscribers() -> Subscribers:
    subscribers: Subscribers

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = parse_qs(urlsplit(self.path).query)
            self._reply(200, query.get("hub.challenge", [""])[0].encode())

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            push = Push(body, self.headers.get("X-Hub-Signature", ""))
            if subscribers.holding:
                with subscribers.lock:
                    subscribers.held += 1
                subscribers.let_go.wait(HOLD_SECONDS)
                if subscribers.drop_held:
                    self.close_connection = True
                    return  # no answer: the hub's request fails (if the hub still lives)
            with subscribers.lock:
                subscribers.pushes.setdefault(urlsplit(self.path).path, []).append(push)
            self._reply(204, b"")

        def _reply(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the hub went away (killed): nothing to answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    subscribers = Subscribers(server, {f"/s/{i}": f"secret-{i}-{uuid.uuid4().hex}"
                                       for i in range(SUBSCRIBERS)})  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return subscribers


# One system for both tests: each subscribes fresh subscribers to a fresh agency's topic, and
# each ends only once its system has recovered (the last push reached every subscriber).
@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    env = FAULT_ENV | {"BANTIN_HUB_ALLOW_PRIVATE_CALLBACKS": "true"}
    running = start_system(tmp_path_factory.mktemp("hub-faults") / "data", extra_env=env)
    yield running
    stop_system(running)


@pytest.fixture
def subscribers() -> Iterator[Subscribers]:
    running = start_subscribers()
    yield running
    running.let_go.set()
    running.server.shutdown()
    running.server.server_close()


def subscribe_all(system: System, subscribers: Subscribers) -> tuple[str, str]:
    """(API key, topic) of a fresh agency every subscriber follows, once all are active."""
    slug = f"hub-{uuid.uuid4().hex[:8]}"
    key = system.create_agency("Sở Thông tin và Truyền thông", slug)
    topic = f"{system.gateway_url}/feeds/agency/{slug}.atom"
    for path, secret in subscribers.secrets.items():
        form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": subscribers.url(path),
                "hub.secret": secret, "hub.lease_seconds": "3600"}  # fmt: skip
        answer = httpx.post(system.ingest_url + "/hub", data=form, timeout=10)
        assert answer.status_code == 202, answer.text

    def all_active() -> bool:
        with session_factory(system.settings())() as session:
            return (
                session.query(Subscription)
                .filter_by(topic=topic, state=SubscriptionState.ACTIVE)
                .count()
                == SUBSCRIBERS
            )

    eventually(all_active, "every subscription active", RECOVERY_SECONDS)
    return key, topic


def publish(system: System, key: str, title: str) -> str:
    with system.api(key) as api:
        answer = api.post("/v1/bulletins", json={"title": title, "body": "Nội dung.",
                                                 "body_format": "text"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        guid: str = system.wait_published(api, answer.json()["id"])["guid"]
        return guid


def everyone_has(subscribers: Subscribers, guid: str, what: str) -> float:
    eventually(lambda: not subscribers.missing(guid), what, RECOVERY_SECONDS)
    return time.monotonic()


def test_deliver_worker_killed_mid_delivery_loses_no_delivery(
    system: System, subscribers: Subscribers
) -> None:
    key, _ = subscribe_all(system, subscribers)
    first = publish(system, key, "Tin trước khi dừng")
    everyone_has(subscribers, first, "every subscriber's first push")

    # Pushes now hang until the worker is dead, then end unanswered: nobody got them.
    subscribers.drop_held, subscribers.holding = True, True
    second = publish(system, key, "Tin lúc dừng")
    eventually(lambda: subscribers.held >= 1, "a delivery in flight", RECOVERY_SECONDS)
    [(worker, _)] = [p for p in system.processes("worker deliver")
                     if p[1] == system.process.pid]  # fmt: skip
    os.kill(worker, signal.SIGKILL)
    killed_at = time.monotonic()
    held_when_killed = subscribers.held
    eventually(lambda: not any(pid == worker for pid, _ in system.processes("worker deliver")),
               "the killed worker gone", 10)  # fmt: skip
    subscribers.holding = False
    subscribers.let_go.set()

    assert subscribers.missing(second), "the kill must interrupt deliveries"
    recovered_at = everyone_has(subscribers, second, "every subscriber's push after the kill")
    # Still delivering afterwards (a new worker).
    third = publish(system, key, "Tin sau khi dừng")
    everyone_has(subscribers, third, "every subscriber's push from the new worker")
    report("deliver worker killed", subscribers=SUBSCRIBERS, held_when_killed=held_when_killed,
           seconds_to_all_delivered=round(recovered_at - killed_at, 2))  # fmt: skip


def test_redis_restarted_empty_while_deliveries_are_owed_loses_none(
    system: System, subscribers: Subscribers
) -> None:
    key, _ = subscribe_all(system, subscribers)
    first = publish(system, key, "Tin trước khi Redis dừng")
    everyone_has(subscribers, first, "every subscriber's first push")

    # Every delivery thread hangs on a push: the other deliveries wait in Redis.
    subscribers.holding = True
    second = publish(system, key, "Tin lúc Redis dừng")
    eventually(lambda: subscribers.held >= 16, "every delivery thread busy", RECOVERY_SECONDS)
    redis = system.redis()
    waiting = redis.llen("deliver")
    [(redis_pid, _)] = system.processes("redis-server")
    os.kill(redis_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert waiting > 0, "Redis must die with deliveries queued"
    eventually(lambda: [p for p, _ in system.processes("redis-server")] not in ([], [redis_pid]),
               "the embedded Redis restarted", 10)  # fmt: skip
    eventually(lambda: _pings(system), "Redis to answer", 10)
    subscribers.holding = False
    subscribers.let_go.set()  # the held pushes are answered: those reached their subscriber

    recovered_at = everyone_has(subscribers, second, "every push after the Redis restart")
    third = publish(system, key, "Tin sau khi Redis trở lại")
    everyone_has(subscribers, third, "every push after the restart")
    report("redis restart (hub)", subscribers=SUBSCRIBERS, deliveries_queued_when_killed=waiting,
           seconds_to_all_delivered=round(recovered_at - killed_at, 2))  # fmt: skip


def _pings(system: System) -> bool:
    try:
        return bool(system.redis().ping())
    except Exception:
        return False
