"""The deliver tasks in-process, against real HTTP servers on loopback (the Celery request is
pushed by hand: retries raise instead of being queued)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from celery.exceptions import Retry

from services.deliver.subscriptions import HubRequest, Mode, owe_deliveries, record_request
from services.deliver.tasks import DELIVERY_RETRIES, client, deliver_content, verify_intent
from services.deliver.topics import signature
from shared.db import create_schema, session_factory
from shared.models import Subscription, SubscriptionState, utcnow
from shared.settings import Settings, get_settings

PUBLIC = "https://bantin.example.gov.vn"
TOPIC = PUBLIC + "/feeds/agency/so-noi-vu.atom"
FEED = b"<feed xmlns='http://www.w3.org/2005/Atom'/>"


class Callback:
    """Echoes challenges (or, under /wrong/, not) and records pushes."""

    def __init__(self) -> None:
        self.pushes: list[tuple[str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                challenge = parse_qs(parts.query).get("hub.challenge", [""])[0]
                body = (("x" if parts.path.startswith("/wrong/") else "") + challenge).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.pushes.append((urlsplit(self.path).path, headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def callback() -> Iterator[Callback]:
    running = Callback()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    # The tasks read their settings from the environment, as in a worker.
    environment = {
        "DATA_DIR": str(tmp_path),
        "REDIS_URL": "memory://",
        "PUBLIC_URL": PUBLIC,
        "HUB_ALLOW_PRIVATE_CALLBACKS": "true",
    }
    for name, value in environment.items():
        monkeypatch.setenv(f"BANTIN_{name}", value)
    get_settings.cache_clear()
    settings = get_settings()
    create_schema(settings)
    feed = settings.resolved_site_dir / "feeds" / "agency" / "so-noi-vu.atom"
    feed.parent.mkdir(parents=True)
    feed.write_bytes(FEED)
    yield settings
    get_settings.cache_clear()


def run(task: Any, *args: Any, retries: int = 0) -> None:
    task.push_request(id="task-1", retries=retries)
    try:
        task.run(*args)
    finally:
        task.pop_request()


def row(settings: Settings, subscription_id: int) -> Subscription:
    with session_factory(settings)() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        session.expunge(found)
        return found


def subscribed(settings: Settings, callback: str, secret: str | None = "k") -> int:
    sessions = session_factory(settings)
    recorded = record_request(sessions, HubRequest(Mode.SUBSCRIBE, TOPIC, callback, 3600, secret))
    assert recorded is not None
    run(verify_intent, *recorded)
    with sessions() as session:
        owe_deliveries(session, [TOPIC], "fp-1")
        session.commit()
    return recorded[0]


def refused_url() -> str:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/dead"


def test_intent_is_confirmed_only_by_the_exact_challenge(
    settings: Settings, callback: Callback
) -> None:
    good = subscribed(settings, callback.url + "/good")
    assert row(settings, good).state == SubscriptionState.ACTIVE
    wrong = subscribed(settings, callback.url + "/wrong/x")
    denied = row(settings, wrong)
    assert denied.state == SubscriptionState.DENIED and denied.secret is None


def test_a_delivery_posts_the_feed_signed_and_records_it(
    settings: Settings, callback: Callback
) -> None:
    sid = subscribed(settings, callback.url + "/good", secret="bí mật")
    run(deliver_content, sid, "fp-1")
    ((path, headers, body),) = callback.pushes
    assert (path, body) == ("/good", FEED)
    assert headers["x-hub-signature"] == signature("bí mật", FEED)
    assert headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert f'<{TOPIC}>; rel="self"' in headers["link"]
    done = row(settings, sid)
    assert (done.delivered_fingerprint, done.owed_since, done.claimed_by) == ("fp-1", None, None)
    run(deliver_content, sid, "fp-1")  # the same content again: skipped
    assert len(callback.pushes) == 1


def test_a_dead_subscriber_is_retried_holding_its_slot_then_given_up(
    settings: Settings, callback: Callback
) -> None:
    sid = subscribed(settings, callback.url + "/good")
    dead = refused_url()
    with session_factory(settings)() as session:  # its server died after verifying
        session.query(Subscription).filter_by(id=sid).update({"callback": dead})
        session.commit()
    with pytest.raises(Retry):
        run(deliver_content, sid, "fp-1")
    retrying = row(settings, sid)
    assert retrying.last_delivery_status == "retrying"
    assert retrying.last_error is not None and "ConnectError" in retrying.last_error
    assert retrying.claimed_by == "task-1"
    assert retrying.claimed_until is not None and retrying.claimed_until > utcnow()

    run(deliver_content, sid, "fp-1", retries=DELIVERY_RETRIES)  # the last attempt
    failed = row(settings, sid)
    assert failed.last_delivery_status == "failed" and failed.claimed_by is None
    assert failed.owed_since is None and failed.delivered_fingerprint is None


def test_an_expired_lease_gets_nothing(settings: Settings, callback: Callback) -> None:
    sid = subscribed(settings, callback.url + "/good")
    with session_factory(settings)() as session:
        expired = utcnow() - timedelta(seconds=1)
        session.query(Subscription).filter_by(id=sid).update({"expires_at": expired})
        session.commit()
    run(deliver_content, sid, "fp-1")
    assert callback.pushes == []


def test_a_task_with_nothing_to_send_clears_what_is_owed(
    settings: Settings, callback: Callback
) -> None:
    sid = subscribed(settings, callback.url + "/good")
    run(deliver_content, sid, "fp-1")
    assert len(callback.pushes) == 1
    with session_factory(settings)() as session:  # owed although delivered (an older bug)
        session.query(Subscription).filter_by(id=sid).update({"owed_since": utcnow()})
        session.commit()
    run(deliver_content, sid, "fp-1")
    assert len(callback.pushes) == 1  # nothing sent ...
    assert row(settings, sid).owed_since is None  # ... and nothing owed any more


def test_a_url_httpx_refuses_fails_at_once_instead_of_retrying_forever(
    settings: Settings, callback: Callback, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = "http://example.com/\x7f"  # refused by check_callback; here its backstop is tested
    monkeypatch.setattr("services.deliver.tasks.check_callback", lambda *_: None)
    sessions = session_factory(settings)
    recorded = record_request(sessions, HubRequest(Mode.SUBSCRIBE, TOPIC, bad, 3600, None))
    assert recorded is not None
    run(verify_intent, *recorded)  # no Retry raised
    denied = row(settings, recorded[0])
    assert denied.state == SubscriptionState.DENIED and denied.token is None
    assert denied.last_error is not None and "InvalidURL" in denied.last_error

    sid = subscribed(settings, callback.url + "/good")
    with session_factory(settings)() as session:
        session.query(Subscription).filter_by(id=sid).update({"callback": bad + "/2"})
        session.commit()
    run(deliver_content, sid, "fp-1")  # no Retry raised
    failed = row(settings, sid)
    assert failed.last_delivery_status == "failed" and failed.claimed_by is None
    assert failed.last_error is not None and "InvalidURL" in failed.last_error


def test_waiting_for_a_free_connection_is_not_a_subscriber_failure() -> None:
    # DELIVER_CONCURRENCY threads may outnumber the client's connections: a PoolTimeout
    # would be recorded against whichever subscriber waited.
    timeout = client(False).timeout
    assert timeout.pool is None
    assert (timeout.connect, timeout.read, timeout.write) == (3.0, 5.0, 5.0)
