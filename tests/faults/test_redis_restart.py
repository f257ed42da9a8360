"""Fault 2: Redis dies while 200 bulletins are queued and comes back empty."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared import faults
from shared.testing import System
from tests.faults.checks import report, statuses, wait_for, wait_until_complete

BULLETINS = 200


def test_redis_restarting_empty_loses_nothing(system: System) -> None:
    key = system.create_agency("Sở Công Thương", "so-cong-thuong")
    # Slow renders down so that most of the 200 are still waiting in Redis when it dies.
    system.arm_fault(faults.RENDER_BEFORE_WRITE, "sleep:0.5")

    def submit(i: int) -> dict[str, Any]:
        with system.api(key) as api:
            answer = api.post("/v1/bulletins", json={"title": f"Giá xăng kỳ {i}", "body": "…",
                                                     "category": "Giá cả"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        accepted: dict[str, Any] = answer.json()
        return accepted

    with ThreadPoolExecutor(8) as pool:
        accepted = {a["id"]: a for a in pool.map(submit, range(BULLETINS))}
    [(redis_pid, _)] = system.processes("redis-server")
    redis = system.redis()
    waiting = redis.llen("render")
    os.kill(redis_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    queued_when_killed = BULLETINS - statuses(system)["published"]
    assert queued_when_killed > BULLETINS // 2, "the test must kill Redis with work queued"

    # bantin up starts a new, empty Redis on the same port; nobody touches anything else.
    wait_for(lambda: [p for p, _ in system.processes("redis-server")] not in ([], [redis_pid]),
             10, "the embedded Redis to be restarted")  # fmt: skip
    wait_for(lambda: bool(redis.ping()), 10, "Redis to answer")
    assert redis.dbsize() < 50  # it did come back empty (a few keys are rewritten at once)
    (system.data_dir / "faults" / faults.RENDER_BEFORE_WRITE).unlink()

    published_at = wait_for(lambda: statuses(system)["published"] == BULLETINS, 120,
                            "every bulletin published")  # fmt: skip

    feeds_at = wait_until_complete(system, accepted)
    assert statuses(system) == {"published": BULLETINS}
    report(
        "redis restart",
        bulletins=BULLETINS,
        queued_when_killed=queued_when_killed,
        render_messages_in_redis_when_killed=waiting,
        seconds_to_all_published=round(published_at - killed_at, 2),
        seconds_to_all_feeds_complete=round(feeds_at - killed_at, 2),
    )
