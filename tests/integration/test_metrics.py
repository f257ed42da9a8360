"""Metrics, heartbeats and JSON logs of the real processes of `bantin up`.

One system for the module (SQLite, BANTIN_LOG_FORMAT=json): every endpoint is found through
the heartbeats, as `bantin status` and an operator would find them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from shared.heartbeat import Beat, read_all
from shared.testing import System, start_system, stop_system
from tests.metrics import sample

WAIT = 60.0  # seconds any one condition may take before the test fails
PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        tmp_path_factory.mktemp("bantin-metrics"), extra_env={"BANTIN_LOG_FORMAT": "json"}
    )
    yield running
    stop_system(running)


def beats(system: System, timeout: float = WAIT) -> dict[str, Beat]:
    """One beat per role, waiting until render, feed and reconciler all beat with a URL."""
    deadline = time.monotonic() + timeout
    while True:
        found = {beat.role: beat for beat in read_all(system.redis()) if beat.metrics_url}
        if {"render", "feed", "reconciler"} <= found.keys():
            return found
        assert time.monotonic() < deadline, f"no metrics URL in the heartbeats: {found}"
        time.sleep(0.2)


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, url
    assert response.headers["content-type"].startswith("text/plain"), url
    return response.text


def publish(system: System, key: str, count: int) -> list[int]:
    ids = []
    with system.api(key) as client:
        for i in range(count):
            body = {"title": f"Thông báo {i}", "body": "Nội dung.", "category": "Đo lường"}
            response = client.post("/v1/bulletins", json=body)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
    return ids


def wait_all_published(system: System, key: str, ids: list[int]) -> None:
    with system.api(key) as client:
        for bulletin_id in ids:
            system.wait_published(client, bulletin_id, timeout=WAIT)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is missing")
def test_every_metrics_endpoint_passes_promtool_under_load(system: System) -> None:
    key = system.create_agency("Sở Đo lường", f"do-luong-{uuid.uuid4().hex[:6]}")
    endpoints = {role: str(beat.metrics_url) for role, beat in beats(system).items()}
    endpoints |= {"ingest": system.ingest_url + "/metrics",
                  "gateway": system.gateway_url + "/metrics"}  # fmt: skip
    published: list[int] = []
    load = threading.Thread(target=lambda: published.extend(publish(system, key, 120)))
    load.start()
    checked: dict[str, int] = dict.fromkeys(endpoints, 0)
    try:
        for _ in range(40):  # bounded: a few rounds while the load runs, at least one after
            for role, url in endpoints.items():
                check = subprocess.run(
                    [str(PROMTOOL), "check", "metrics"], input=scrape(url),
                    capture_output=True, text=True, timeout=30, check=False,
                )  # fmt: skip
                assert check.returncode == 0, f"{role} {url}:\n{check.stdout}{check.stderr}"
                checked[role] += 1
            if not load.is_alive():
                break
    finally:
        load.join(WAIT)
    assert len(published) == 120
    assert all(count >= 1 for count in checked.values()), checked
    wait_all_published(system, key, published)

    render = scrape(endpoints["render"])
    assert (sample(render, "bantin_bulletins_published_total") or 0) >= 120
    assert (sample(render, "bantin_publish_latency_seconds_count") or 0) >= 120
    assert (sample(render, "bantin_tasks_total", queue="render", task="render.bulletin",
                   outcome="success") or 0) >= 120  # fmt: skip
    feed = scrape(endpoints["feed"])
    assert (sample(feed, "bantin_listing_builds_total", job="feed", outcome="success") or 0) >= 1
    reconciler = scrape(endpoints["reconciler"])
    assert (sample(reconciler, "bantin_reconciler_passes_total", outcome="ok") or 0) >= 1
    assert sample(reconciler, "bantin_queue_stats_up") == 1


def test_heartbeats_describe_the_worker_pool_and_the_reconcilers_last_pass(
    system: System,
) -> None:
    found = beats(system)
    render = found["render"]
    pool = {pid for pid, _parent in system.processes("worker render") if pid != render.pid}
    assert render.info["queue"] == "render"
    assert render.info["concurrency"] == len(render.info["pool_pids"]) >= 1
    assert set(render.info["pool_pids"]) <= pool
    reconciler = found["reconciler"].info
    assert reconciler["passes"] >= 1 and reconciler["last_pass_at"] is not None
    assert set(reconciler["last_pass"]) >= {"released", "requeued", "repaired"}


def depth_and_age(reconciler_url: str, queue: str) -> tuple[float, float]:
    text = scrape(reconciler_url)
    depth = sample(text, "bantin_queue_depth", queue=queue)
    age = sample(text, "bantin_queue_oldest_age_seconds", queue=queue)
    assert depth is not None and age is not None, text
    return depth, age


def test_queue_depth_rises_and_falls_with_a_paused_and_resumed_worker(system: System) -> None:
    key = system.create_agency("Sở Hàng đợi", f"hang-doi-{uuid.uuid4().hex[:6]}")
    reconciler_url = beats(system)["reconciler"].metrics_url
    assert reconciler_url is not None
    workers = [pid for pid, _parent in system.processes("worker render")]
    assert workers
    count = 20
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        ids = publish(system, key, count)
        deadline = time.monotonic() + WAIT
        while True:
            depth, age = depth_and_age(reconciler_url, "render")
            if depth >= count and age > 0:
                break
            assert time.monotonic() < deadline, f"render depth {depth}, age {age}"
            time.sleep(0.2)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    wait_all_published(system, key, ids)
    deadline = time.monotonic() + WAIT
    while (now := depth_and_age(reconciler_url, "render")) != (0, 0):
        assert time.monotonic() < deadline, f"render depth and age stayed at {now}"
        time.sleep(0.2)


def json_lines(system: System, role: str) -> list[dict[str, object]]:
    """The JSON log records of one child of `bantin up` (its lines are prefixed `role |`)."""
    records = []
    for line in system.log().splitlines():
        name, bar, text = line.partition("| ")
        if bar and name.strip() == role and text.startswith("{"):
            record = json.loads(text)  # must parse: one object per line
            assert isinstance(record, dict)
            records.append(record)
    return records


def test_json_logs_carry_each_bulletins_id_agency_and_revision(system: System) -> None:
    slug = f"nhat-ky-{uuid.uuid4().hex[:6]}"
    key = system.create_agency("Sở Nhật ký", slug)
    ids = publish(system, key, 3)
    wait_all_published(system, key, ids)
    deadline = time.monotonic() + WAIT
    while True:
        render = json_lines(system, "render")
        published = {r["bulletin_id"]: r for r in render if r.get("message") == "published"}
        if set(ids) <= published.keys():
            break
        assert time.monotonic() < deadline, "publish events missing from the render log"
        time.sleep(0.2)
    for bulletin_id in ids:
        record = published[bulletin_id]
        assert record["agency"] == slug and record["revision"] == 1
        assert record["process"] == "render" and record["level"] == "INFO"
        assert f"agency:{slug}" in str(record["listing"])  # which listings it asked to refresh
    # The feed builds name their listing and the newest bulletin they show (a build follows
    # the publish: wait for it).
    while True:
        feed = [r for r in json_lines(system, "feed") if r.get("listing") == f"agency:{slug}"]
        if any(r.get("bulletin_id") == max(ids) and r.get("agency") == slug for r in feed):
            break
        assert time.monotonic() < deadline, f"no feed build showing {max(ids)}: {feed[-3:]}"
        time.sleep(0.2)
    # Every worker and reconciler line outside Celery's start-up banner is one JSON object.
    for role in ("render", "feed", "reconciler"):
        assert json_lines(system, role), role
        _assert_only_json_after_start(system.log(), role)


def _assert_only_json_after_start(log: str, role: str) -> None:
    ready = False
    for line in log.splitlines():
        name, bar, text = line.partition("| ")
        if not bar or name.strip() != role or not text.strip():
            continue
        if role == "reconciler" or ready:
            assert text.startswith("{"), f"{role}: not a JSON line: {text!r}"
        if text.startswith("{") and json.loads(text).get("message", "").endswith("ready."):
            ready = True  # Celery's banner is printed before it logs "… ready."
