"""The WebSub hub through the running system: real subscriber HTTP servers on loopback, a real
`bantin up` (ingest's /hub, the deliver worker, the feed worker), the database read directly.
The systems are the integration suite's own (tests/integration/conftest.py: SQLite and
PostgreSQL, private callbacks allowed); each test has its own agency, topic and subscriber."""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree

from shared.db import session_factory
from shared.models import Subscription, SubscriptionState
from shared.testing import System, eventually

SLOW_SECONDS = 10.0  # a slow subscriber answers pushes this late: past the hub's timeout
ATOM = {"atom": "http://www.w3.org/2005/Atom"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscriber:
    """A WebSub subscriber: answers intent checks (echoing the challenge, or for paths under
    /wrong/ something else) and records every GET and POST it gets; pushes to paths under
    /slow/ are answered only after SLOW_SECONDS (or when it stops)."""

    server: ThreadingHTTPServer
    checks: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    pushes: list[Received] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def pushes_to(self, path: str) -> list[Received]:
        return [push for push in list(self.pushes) if push.path == path]

    def checks_of(self, path: str, mode: str) -> list[dict[str, str]]:
        return [q for p, q in list(self.checks) if p == path and q.get("hub.mode") == mode]

    def stop(self) -> None:
        self.stopping.set()  # slow answers end now
        self.server.shutdown()
        self.server.server_close()


def start_subscriber() -> Subscriber:
    subscriber: Subscriber

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            parts = urlsplit(self.path)
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            subscriber.checks.append((parts.path, query))
            challenge = query.get("hub.challenge", "")
            answer = ("not-" + challenge) if parts.path.startswith("/wrong/") else challenge
            self._reply(200, answer.encode())

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            path = urlsplit(self.path).path
            subscriber.pushes.append(Received(path, headers, body))
            if path.startswith("/slow/"):
                subscriber.stopping.wait(SLOW_SECONDS)
            self._reply(204, b"")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    subscriber = Subscriber(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return subscriber


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    """One per test: what it records belongs to that test alone."""
    running = start_subscriber()
    yield running
    running.stop()


def hub(system: System, mode: str, topic: str, callback: str, secret: str | None = None) -> None:
    form = {"hub.mode": mode, "hub.topic": topic, "hub.callback": callback,
            "hub.lease_seconds": "3600"}  # fmt: skip
    if secret is not None:
        form["hub.secret"] = secret
    response = httpx.post(system.ingest_url + "/hub", data=form, timeout=10)
    assert response.status_code == 202, response.text


def subscription(system: System, topic: str, callback: str) -> Subscription | None:
    with session_factory(system.settings())() as session:
        for row in session.query(Subscription).filter_by(topic=topic, callback=callback):
            session.expunge(row)
            return row
    return None


def state_is(system: System, topic: str, callback: str, state: str) -> bool:
    row = subscription(system, topic, callback)
    return row is not None and row.state == state


def publish(system: System, key: str, title: str) -> str:
    with system.api(key) as api:
        answer = api.post("/v1/bulletins", json={"title": title, "body": "Nội dung.",
                                                 "body_format": "text"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        guid: str = system.wait_published(api, answer.json()["id"])["guid"]
        return guid


def entry_ids(body: bytes) -> list[str]:
    root = etree.fromstring(body)
    return [entry.findtext("atom:id", namespaces=ATOM) or "" for entry in root.iterfind(
        "atom:entry", ATOM)]  # fmt: skip


def pushed_with(subscriber: Subscriber, path: str, guid: str) -> Received | None:
    for push in subscriber.pushes_to(path):
        if guid in entry_ids(push.body):
            return push
    return None


def new_agency(system: System) -> tuple[str, str]:
    """(API key, Atom topic) of a fresh agency."""
    slug = f"hub-{uuid.uuid4().hex[:8]}"
    key = system.create_agency("Sở Thông tin và Truyền thông", slug)
    return key, f"{system.gateway_url}/feeds/agency/{slug}.atom"


def test_subscribe_receive_signed_feeds_then_unsubscribe(
    system: System, subscriber: Subscriber
) -> None:
    key, topic = new_agency(system)
    secret = "bí mật-" + uuid.uuid4().hex
    alice, bob = subscriber.url + "/good/alice", subscriber.url + "/good/bob"
    hub(system, "subscribe", topic, alice, secret)
    hub(system, "subscribe", topic, bob)  # no secret: no signature

    # Intent verified: a GET with the mode, topic, lease and a challenge, then active.
    eventually(lambda: subscriber.checks_of("/good/alice", "subscribe"), "alice's check")
    (check,) = subscriber.checks_of("/good/alice", "subscribe")
    assert check["hub.topic"] == topic and check["hub.lease_seconds"] == "3600"
    assert len(check["hub.challenge"]) >= 32
    for callback in (alice, bob):
        eventually(partial(state_is, system, topic, callback, "active"), f"{callback} active")

    guid = publish(system, key, "Thông báo lịch tiếp công dân")
    push = eventually(lambda: pushed_with(subscriber, "/good/alice", guid), "alice's push")
    assert push.headers["content-type"] == "application/atom+xml; charset=utf-8"
    expected = hmac.new(secret.encode(), push.body, hashlib.sha256).hexdigest()
    assert push.headers["x-hub-signature"] == f"sha256={expected}"
    assert push.headers["link"] == f'<{system.ingest_url}/hub>; rel="hub", <{topic}>; rel="self"'
    # The body is the feed as served, naming its hub and itself.
    served = httpx.get(topic, timeout=5).content
    assert entry_ids(served) == entry_ids(push.body) == [guid]
    links = etree.fromstring(push.body).findall("atom:link", ATOM)
    assert {(link.get("rel"), link.get("href")) for link in links} >= {
        ("hub", system.ingest_url + "/hub"), ("self", topic)}  # fmt: skip
    bob_push = eventually(lambda: pushed_with(subscriber, "/good/bob", guid), "bob's push")
    assert "x-hub-signature" not in bob_push.headers

    # Alice unsubscribes (verified the same way); Bob stays.
    hub(system, "unsubscribe", topic, alice)
    eventually(lambda: subscriber.checks_of("/good/alice", "unsubscribe"), "unsubscribe check")
    assert "hub.lease_seconds" not in subscriber.checks_of("/good/alice", "unsubscribe")[0]
    eventually(lambda: state_is(system, topic, alice, "unsubscribed"), "alice unsubscribed")
    alice_had = len(subscriber.pushes_to("/good/alice"))

    second = publish(system, key, "Thông báo thứ hai")
    # Both subscribers' deliveries of a build are queued together: once Bob has the second
    # bulletin, Alice's would have been queued too. She gets nothing.
    eventually(lambda: pushed_with(subscriber, "/good/bob", second), "bob's second push")
    row = subscription(system, topic, bob)
    assert row is not None and row.last_delivery_status == "delivered"
    assert len(subscriber.pushes_to("/good/alice")) == alice_had


def test_a_wrong_challenge_never_activates(system: System, subscriber: Subscriber) -> None:
    key, topic = new_agency(system)
    mallory, witness = subscriber.url + "/wrong/mallory", subscriber.url + "/good/witness"
    hub(system, "subscribe", topic, mallory, "secret")
    hub(system, "subscribe", topic, witness)
    eventually(lambda: state_is(system, topic, mallory, "denied"), "mallory denied")
    assert subscriber.checks_of("/wrong/mallory", "subscribe")
    eventually(lambda: state_is(system, topic, witness, "active"), "witness active")
    row = subscription(system, topic, mallory)
    assert row is not None and row.secret is None and row.expires_at is None
    assert row.last_error is not None and "challenge" in row.last_error

    guid = publish(system, key, "Chỉ người xác nhận mới nhận")
    eventually(lambda: pushed_with(subscriber, "/good/witness", guid), "witness's push")
    assert subscriber.pushes_to("/wrong/mallory") == []
    denied = subscription(system, topic, mallory)
    assert denied is not None and denied.state == SubscriptionState.DENIED


def test_dead_and_slow_subscribers_are_retried_and_recorded_while_a_healthy_one_is_served(
    system: System, subscriber: Subscriber
) -> None:
    key, topic = new_agency(system)
    doomed = start_subscriber()  # answers its intent check, then dies
    dead, healthy = doomed.url + "/good/dead", subscriber.url + "/good/healthy"
    slow = subscriber.url + "/slow/sloth"
    try:
        for callback in (dead, slow, healthy):
            hub(system, "subscribe", topic, callback)
        for callback in (dead, slow, healthy):
            eventually(partial(state_is, system, topic, callback, "active"), f"{callback} active")
    finally:
        doomed.stop()  # its port now refuses connections

    first = publish(system, key, "Tin thứ nhất")
    eventually(lambda: pushed_with(subscriber, "/good/healthy", first), "healthy push")

    def retrying(callback: str, error: str) -> Subscription | None:
        row = subscription(system, topic, callback)
        if row is None or row.last_delivery_status != "retrying":
            return None
        return row if error in (row.last_error or "") else None

    # A delivery in flight when it died may fail otherwise (the connection cut mid-answer);
    # the retries that follow find the port closed.
    row = eventually(partial(retrying, dead, "ConnectError"), "the dead subscriber's refusal")
    assert row.state == SubscriptionState.ACTIVE  # retried, not dropped
    # It may have received the agency's empty feed before it died (a build the reconciler
    # asks for), never the bulletin published after.
    assert pushed_with(doomed, "/good/dead", first) is None
    # The slow one gets the body but answers too late: a timeout, retried (at least once).
    # The timeout seen first may be an earlier push's (the agency's empty feed, built before
    # the publish); the retry sends the feed as it is then, with the bulletin.
    row = eventually(partial(retrying, slow, "ReadTimeout"), "the slow subscriber's timeout")
    eventually(lambda: pushed_with(subscriber, "/slow/sloth", first), "the slow one's push",
               timeout=60)  # fmt: skip

    # Their retries (backing off) hold up nobody: the next change reaches the healthy one too.
    second = publish(system, key, "Tin thứ hai")
    eventually(lambda: pushed_with(subscriber, "/good/healthy", second), "healthy 2nd push")
