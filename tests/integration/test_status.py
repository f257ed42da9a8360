"""`bantin status` against a real `bantin up`: every part alive, the bulletins and latency of
the last minute, a failed bulletin with its error, and a render worker stopped or killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.faults import RENDER_BEFORE_WRITE
from shared.heartbeat import HEARTBEAT_TTL
from shared.testing import System, start_system, stop_system

ROLES = {"ingest", "gateway", "render", "feed", "deliver", "reconciler"}
WAIT = HEARTBEAT_TTL * 3  # bound on waiting for a change to show


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        tmp_path_factory.mktemp("status") / "data",
        extra_env={"BANTIN_FAULT_INJECTION": "1", "BANTIN_MAX_ATTEMPTS": "2"},
    )
    yield running
    stop_system(running)


@pytest.fixture(scope="module")
def key(system: System) -> str:
    return (system.data_dir / "demo-agency.key").read_text().strip()


def status(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    """`bantin status` as an operator runs it: only the data dir in common with `up`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "status", *args],
        env=env | {"BANTIN_DATA_DIR": str(system.data_dir)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def report(system: System) -> dict[str, Any]:
    done = status(system, "--json")
    assert "Traceback" not in done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == (0 if found["ok"] else 1)
    return found


def wait_report(system: System, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while not until(found := report(system)):
        assert time.monotonic() < deadline, json.dumps(found, indent=2)
        time.sleep(1)
    return found


def test_every_part_is_alive_with_the_last_minute_of_bulletins(system: System, key: str) -> None:
    with system.api(key) as api:
        published = api.post("/v1/bulletins", json={"title": "Tin mới", "body": "Nội dung."})
        system.wait_published(api, published.json()["id"])
        later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        scheduled = api.post(
            "/v1/bulletins", json={"title": "Tin hẹn giờ", "body": "Sau.", "published_at": later}
        )
        assert scheduled.status_code == 202

    found = report(system)
    assert found["ok"] is True, found["problems"]
    assert {process["role"] for process in found["processes"]} == ROLES
    assert all(process["metrics_url"] for process in found["processes"])
    assert {queue["queue"] for queue in found["queues"]} == {"render", "feed", "deliver"}
    assert found["bulletins"] == {"queued": 0, "scheduled": 1, "failed": 0}
    assert found["latency"]["count"] >= 1 and found["latency"]["max_seconds"] is not None
    assert found["reconciler"] is not None and found["reconciler"]["info"]

    table = status(system)
    assert table.returncode == 0
    for role in ROLES:
        assert f"\n  {role} " in table.stdout
    assert "queued 0   scheduled 1   failed 0" in table.stdout
    assert table.stdout.rstrip().endswith("All well.")


def test_a_failed_bulletin_is_a_problem_listed_with_its_error(system: System, key: str) -> None:
    armed = system.arm_fault(RENDER_BEFORE_WRITE, "error")
    try:
        with system.api(key) as api:
            answer = api.post("/v1/bulletins", json={"title": "Hỏng", "body": "Không in được."})
            bulletin_id = answer.json()["id"]
            found = wait_report(system, lambda r: r["bulletins"]["failed"] == 1)
    finally:
        armed.unlink()
    assert found["ok"] is False
    assert any("1 failed bulletin(s)" in problem for problem in found["problems"])
    error = found["errors"][0]
    assert (error["bulletin_id"], error["agency"], error["status"]) == (
        bulletin_id,
        "bac-kan",
        "failed",
    )
    assert "injected fault at render-before-write" in error["last_error"]
    table = status(system)
    assert table.returncode == 1
    assert "injected fault at render-before-write" in table.stdout
    assert "PROBLEMS (1)" in table.stdout


def _render_worker(system: System) -> int:
    """The pid of the render worker `up` started (its process group holds its pool)."""
    [(pid, _ppid)] = [p for p in system.processes("worker render") if p[1] == system.process.pid]
    return pid


def test_a_stopped_render_worker_is_reported_and_a_killed_one_replaced(system: System) -> None:
    def render_pids(found: dict[str, Any]) -> set[int]:
        return {p["pid"] for p in found["processes"] if p["role"] == "render"}

    worker = _render_worker(system)
    assert worker in render_pids(report(system))

    os.killpg(worker, signal.SIGSTOP)  # hung, not dead: only its missing heartbeat tells
    try:
        found = wait_report(system, lambda r: not render_pids(r))
        table = status(system)
    finally:
        os.killpg(worker, signal.SIGCONT)
    assert "no render process alive (no heartbeat in the last seconds)" in found["problems"]
    assert table.returncode == 1 and "NOT RUNNING: render" in table.stdout
    wait_report(system, lambda r: worker in render_pids(r))

    os.killpg(worker, signal.SIGKILL)  # `bantin up` starts a new one
    found = wait_report(system, lambda r: bool(render_pids(r)) and worker not in render_pids(r))
    assert _render_worker(system) in render_pids(found)
    assert "render exited with code -9; restarting it" in system.terminal()


def test_with_nothing_running_status_says_so_and_exits_1(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "status"],
        env=env | {"BANTIN_DATA_DIR": str(tmp_path / "none")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no embedded Redis is running for data dir" in done.stdout
    assert "start `bantin up` or set BANTIN_REDIS_URL" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
