"""Faults 3, 4 and 6: ingest dying after its commit, a stampede of retries, and a correction
racing its own earlier render."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import feedparser
import httpx
import pytest
from sqlalchemy import func, select

from shared import faults
from shared.db import session_scope
from shared.models import Bulletin
from shared.testing import System
from tests.faults.checks import report, wait_for
from tests.faults.conftest import disarm_faults


@pytest.fixture
def system(module_system: System) -> Iterator[System]:
    """These tests share one system (tests/faults/conftest.py's `module_system`): each has its
    own agency and idempotency key, waits until ingest is back or its renders are done, and
    its fault is disarmed after it."""
    yield module_system
    disarm_faults(module_system)


def count_with_key(system: System, key: str) -> int:
    with session_scope(system.settings()) as session:
        query = select(func.count()).where(Bulletin.idempotency_key == key)
        return int(session.scalar(query) or 0)


def test_ingest_killed_between_commit_and_enqueue_still_publishes(system: System) -> None:
    key = system.create_agency("Sở Xây dựng", "so-xay-dung")
    system.arm_fault(faults.INGEST_AFTER_COMMIT, "crash")
    idempotency_key = str(uuid.uuid4())
    bulletin = {"title": "Điều chỉnh quy hoạch", "body": "Nội dung điều chỉnh."}
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    started = time.monotonic()
    try:
        answer = httpx.post(system.ingest_url + "/v1/bulletins", json=bulletin, headers=headers)
        raise AssertionError(f"ingest should have died, answered {answer.status_code}")
    except httpx.TransportError:
        pass  # the process died after committing, before queueing or answering
    assert count_with_key(system, idempotency_key) == 1  # the commit happened

    # The agency's client retries with the same key once ingest is back: it gets the
    # bulletin that was stored, and the reconciler (nothing else queued it) publishes it.
    def replayed() -> bool:
        try:
            return httpx.post(system.ingest_url + "/v1/bulletins", json=bulletin,
                              headers=headers).status_code == 202  # fmt: skip
        except httpx.TransportError:
            return False

    wait_for(replayed, 30, "ingest to come back")
    retry = httpx.post(system.ingest_url + "/v1/bulletins", json=bulletin, headers=headers)
    assert retry.headers["idempotent-replayed"] == "true"
    with system.api(key) as api:
        document = system.wait_published(api, retry.json()["id"])
    assert httpx.get(document["url"]).status_code == 200
    assert count_with_key(system, idempotency_key) == 1
    report("ingest crash after commit", seconds_to_published=round(time.monotonic() - started, 2))


def test_fifty_concurrent_requests_with_one_key_make_one_bulletin(system: System) -> None:
    key = system.create_agency("Sở Ngoại vụ", "so-ngoai-vu")
    idempotency_key = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
    body = {"title": "Đón đoàn công tác", "body": "Lịch đón đoàn."}

    def post(_: int) -> httpx.Response:
        return httpx.post(system.ingest_url + "/v1/bulletins", json=body, headers=headers,
                          timeout=30)  # fmt: skip

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(post, range(50)))
    assert [a.status_code for a in answers] == [202] * 50
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 49
    assert count_with_key(system, idempotency_key) == 1


def test_a_correction_racing_its_earlier_render_ends_on_the_newest(system: System) -> None:
    key = system.create_agency("Sở Tài nguyên", "so-tai-nguyen")
    slow = system.arm_fault(faults.RENDER_BEFORE_WRITE, "sleep:1.5")
    with system.api(key) as api:
        first = api.post("/v1/bulletins", json={"title": "Bản gốc", "body": "Lần 1"}).json()
        time.sleep(0.3)  # revision 1 is now being rendered, held at the kill point
        for revision in (2, 3):
            correction = {"title": f"Bản sửa {revision}", "body": f"Lần {revision}"}
            answer = api.put(f"/v1/bulletins/{first['id']}", json=correction)
            assert answer.json()["revision"] == revision
        slow.unlink()  # revision 3 renders at once; revisions 1 and 2 finish after it
        wait_for(lambda: api.get(f"/v1/bulletins/{first['id']}").json()["rendered_revision"] == 3,
                 30, "revision 3 to be live")  # fmt: skip
        time.sleep(2)  # the slow, stale renders of revisions 1 and 2 wake up and must lose
        status = api.get(f"/v1/bulletins/{first['id']}").json()
    assert (status["status"], status["revision"], status["rendered_revision"]) == (
        "published",
        3,
        3,
    )
    page = httpx.get(first["url"]).text
    assert "Bản sửa 3" in page and "Bản gốc" not in page and "Bản sửa 2" not in page

    def feed_title() -> str | None:
        parsed = feedparser.parse(
            httpx.get(f"{system.gateway_url}/feeds/agency/so-tai-nguyen.atom").content
        )
        return next((e.title for e in parsed.entries if e.id == status["guid"]), None)

    wait_for(lambda: feed_title() == "Bản sửa 3", 30, "the feed to show revision 3")
