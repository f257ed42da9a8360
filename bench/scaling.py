"""Scenario 6: render throughput with 1 and with 2 worker processes.

The system's own render worker is paused; a backlog of bulletins is queued; then one
`bantin worker render --concurrency N` drains it. Throughput is bulletins rendered per second
of draining (feed and index rebuilds run alongside, as in production).
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from sqlalchemy import func, select

from bench.core import Options, Result
from bench.system import pause, resume, running_system
from shared.db import session_scope
from shared.models import Bulletin, BulletinStatus
from shared.testing import System

NAME = "6 scaling"


def published(system: System) -> int:
    with session_scope(system.settings()) as session:
        query = select(func.count()).where(Bulletin.status == BulletinStatus.PUBLISHED)
        return int(session.scalar(query) or 0)


def queue_backlog(system: System, key: str, count: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=system.ingest_url, headers=headers, timeout=60) as client:
        for start in range(0, count, 100):
            batch = [{"title": f"Bản tin tồn đọng {i}", "body": "Nội dung.\n\nHết.",
                      "category": f"Chuyên mục {i % 5}"}
                     for i in range(start, min(count, start + 100))]  # fmt: skip
            assert client.post("/v1/bulletins:batch", json={"bulletins": batch}).status_code == 200


def drain_rate(system: System, key: str, count: int, concurrency: int) -> float:
    before = published(system)
    queue_backlog(system, key, count)
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "render", "-c", str(concurrency)],
        env=system.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while published(system) == before:  # start the clock at the first render
            time.sleep(0.01)
        started = time.monotonic()
        while published(system) < before + count:
            time.sleep(0.05)
        return count / (time.monotonic() - started)
    finally:
        worker.terminate()
        worker.wait(30)


def run(options: Options) -> list[Result]:
    count = options.size or (300 if options.quick else 2000)
    with running_system(options, "scaling") as system:
        key = (system.data_dir / "demo-agency.key").read_text().strip()
        paused = pause(system, "worker render")
        try:
            one = drain_rate(system, key, count, 1)
            two = drain_rate(system, key, count, 2)
        finally:
            resume(paused)
    return [
        Result(NAME, "render throughput, 1 process", one, "bulletins/s", note=f"{count} queued"),
        Result(NAME, "render throughput, 2 processes", two, "bulletins/s", note=f"{count} queued"),
        Result(
            NAME,
            "ratio 2 / 1",
            two / one,
            "x",
            note="2 cores, shared with feed worker, ingest, gateway and Redis",
        ),  # fmt: skip
    ]
