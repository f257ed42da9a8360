"""Fault 1: render workers killed with SIGKILL, again and again, while 200 bulletins flow."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.testing import System
from tests.faults.checks import report, statuses, wait_for, wait_until_complete

BULLETINS = 200
KILLS = 12
# Each write is two round trips to a single-process moto server: a smaller run keeps the
# bucket's variant short, and its six kills still land while pages are being written.
S3_BULLETINS = 60
S3_KILLS = 6
AGENCIES = ["so-y-te", "so-giao-duc", "so-tai-chinh", "so-noi-vu"]
CATEGORIES = ["Y tế", "Giáo dục", None]


def kill_render_workers(
    system: System, stop: threading.Event, kills: list[str], wanted: int = KILLS
) -> None:
    """Alternate: the worker's main process (its pool goes with it, the supervisor starts a new
    one), and a pool child in the middle of a task (its message is given back)."""
    while len(kills) < wanted and not stop.is_set():
        workers = system.processes("worker render")
        mains = [pid for pid, ppid in workers if ppid == system.process.pid]
        children = [pid for pid, ppid in workers if ppid != system.process.pid]
        targets = children if len(kills) % 2 else mains
        if targets:
            os.kill(targets[0], signal.SIGKILL)
            kills.append("pool child" if len(kills) % 2 else "main process")
        time.sleep(0.4)


# Killed mid-write to a bucket too: the object store's variant of this fault.
@pytest.mark.parametrize("system", ["local", "s3"], indirect=True)
def test_render_workers_killed_repeatedly_lose_and_double_nothing(
    system: System, request: pytest.FixtureRequest
) -> None:
    in_bucket = request.node.callspec.params["system"] == "s3"
    bulletins, wanted = (S3_BULLETINS, S3_KILLS) if in_bucket else (BULLETINS, KILLS)
    keys = {slug: system.create_agency(f"Cơ quan {slug}", slug) for slug in AGENCIES}

    def submit(i: int) -> dict[str, Any]:
        slug = AGENCIES[i % len(AGENCIES)]
        with system.api(keys[slug]) as api:
            answer = api.post(
                "/v1/bulletins",
                json={"title": f"Thông báo số {i}", "body": f"Nội dung {i}.",
                      "category": CATEGORIES[i % len(CATEGORIES)]},
            )  # fmt: skip
        assert answer.status_code == 202, answer.text
        accepted: dict[str, Any] = answer.json()
        return accepted

    kills: list[str] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_render_workers, args=(system, stop, kills, wanted))
    killer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            accepted = {a["id"]: a for a in pool.map(submit, range(bulletins))}
        wait_for(lambda: len(kills) >= wanted, 120, f"{wanted} kills")
    finally:
        stop.set()
        killer.join()
    last_kill = time.monotonic()

    published_at = wait_for(
        lambda: statuses(system)["published"] >= bulletins, 120, "every bulletin published"
    )
    assert len(accepted) == bulletins
    assert statuses(system) == {"published": bulletins}  # none lost, none failed

    feeds_at = wait_until_complete(system, accepted)
    report(
        "worker kills",
        bulletins=bulletins,
        kills=kills.count("main process") + kills.count("pool child"),
        main_kills=kills.count("main process"),
        seconds_from_last_kill_to_all_published=round(published_at - last_kill, 2),
        seconds_from_last_kill_to_all_feeds_complete=round(feeds_at - last_kill, 2),
    )
