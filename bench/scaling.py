"""Scenario 6: render throughput with 1, 2 and 4 worker processes, on SQLite and PostgreSQL.

For each database a system is started; its own render worker is paused; for each process
count a backlog of bulletins is queued and one `bantin worker render --concurrency N` drains
it. Throughput is bulletins rendered per second of draining (feed and index rebuilds run
alongside, as in production); the worker's CPU seconds per bulletin (main process and pool,
from psutil) say what the work costs whatever else the machine is doing. `--postgres` runs
PostgreSQL only; without it both databases run, SQLite first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import httpx
import psutil
from sqlalchemy import func, select

from bench.core import Options, Result
from bench.system import pause, resume, running_system
from shared.db import session_scope
from shared.models import Bulletin, BulletinStatus
from shared.testing import System

NAME = "6 scaling"
PROCESSES = (1, 2, 4)
DRAIN_TIMEOUT = 120.0  # one drain; a stuck one is reported, not waited for forever


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


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU of a worker: its main process and its live pool processes."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def drain(system: System, key: str, count: int, concurrency: int) -> tuple[float, float]:
    """(bulletins/s, worker CPU ms per bulletin) for one worker of `concurrency` processes."""
    before = published(system)
    queue_backlog(system, key, count)
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "worker", "render", "-c", str(concurrency)],
        env=system.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    process = psutil.Process(worker.pid)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    try:
        while published(system) == before:  # start the clock at the first render
            if time.monotonic() > deadline:
                raise RuntimeError(f"no render within {DRAIN_TIMEOUT:.0f} s")
            time.sleep(0.01)
        started, cpu_started = time.monotonic(), cpu_seconds(process)
        while published(system) < before + count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{concurrency} processes: backlog not drained in time")
            time.sleep(0.05)
        seconds, cpu = time.monotonic() - started, cpu_seconds(process) - cpu_started
        return count / seconds, cpu * 1000 / count
    finally:
        worker.terminate()
        worker.wait(30)


def one_database(options: Options, count: int) -> list[Result]:
    database = "PostgreSQL" if options.postgres else "SQLite"
    with running_system(options, f"scaling-{database.lower()}") as system:
        key = (system.data_dir / "demo-agency.key").read_text().strip()
        paused = pause(system, "worker render")
        try:
            rates = {n: drain(system, key, count, n) for n in PROCESSES}
        finally:
            resume(paused)
    results = [
        Result(
            NAME,
            f"{database}: render throughput, {n} process{'es' if n > 1 else ''}",
            rate,
            "bulletins/s",
            note=f"{count} queued; worker CPU {cpu:.1f} ms/bulletin",
        )  # fmt: skip
        for n, (rate, cpu) in rates.items()
    ]
    one = rates[1][0]
    for n in PROCESSES[1:]:
        results.append(
            Result(
                NAME,
                f"{database}: ratio {n} / 1",
                rates[n][0] / one,
                "x",
                note="2 cores, shared with the rest of the system; noisy",
            )  # fmt: skip
        )
    return results


def run(options: Options) -> list[Result]:
    count = options.size or (100 if options.quick else 300)
    databases = [options] if options.postgres else [options, replace(options, postgres=True)]
    results: list[Result] = []
    for chosen in databases:
        results += one_database(chosen, count)
    return results
