"""A callback trickling its answer byte by byte is cut off at the request's overall deadline,
not held on to for as long as each byte comes within the read timeout."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from celery.exceptions import Retry

from services.deliver import tasks
from services.deliver.network import deadline
from services.deliver.tasks import client, deliver_content
from shared.db import session_factory
from shared.models import Subscription
from shared.settings import Settings
from tests.unit.deliver.test_tasks import (  # noqa: F401 (settings is a fixture)
    Callback,
    row,
    run,
    settings,
    subscribed,
)

TRICKLE_SECONDS = 20.0  # how long the whole answer takes: far past the deadlines used here
ANSWER = b"HTTP/1.1 204 No Content\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that reads the request, then sends a complete, valid answer one byte at a time
    over TRICKLE_SECONDS (each byte well within any read timeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in ANSWER:
                if stop.wait(TRICKLE_SECONDS / len(ANSWER)):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the hub hung up: what the deadline is for

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_a_request_is_cut_off_at_its_overall_deadline(trickler: str) -> None:
    with pytest.raises(httpx.ReadTimeout, match="deadline"), deadline(1.0):
        with client(True).stream("POST", trickler + "/push", content=b"x") as response:
            response.read()
    # Outside the block, no deadline: the same client serves a normal request.
    normal = Callback()
    try:
        assert client(True).post(normal.url + "/push", content=b"x").status_code == 204
    finally:
        normal.server.shutdown()
        normal.server.server_close()


def test_a_trickling_subscriber_fails_the_attempt_and_is_retried(
    settings: Settings,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    trickler: str,
) -> None:
    callback = Callback()  # verifies normally
    try:
        sid = subscribed(settings, callback.url + "/good")
    finally:
        callback.server.shutdown()
        callback.server.server_close()
    with session_factory(settings)() as session:  # then trickles every answer
        session.query(Subscription).filter_by(id=sid).update({"callback": trickler + "/push"})
        session.commit()
    monkeypatch.setattr(tasks, "REQUEST_DEADLINE_SECONDS", 1.0)
    with pytest.raises(Retry):
        run(deliver_content, sid, "fp-1")
    retrying = row(settings, sid)
    assert retrying.last_delivery_status == "retrying"
    assert retrying.last_error is not None and "deadline" in retrying.last_error
