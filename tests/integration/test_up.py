"""`bantin up` as an operator meets it: the ready block, a clean stop on Ctrl-C/SIGTERM, a port
in use, and custom ports that every printed and published URL follows."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.embedded_redis import free_port
from shared.testing import alive, descendants, start_system, stop_system


def _env_without_settings(**settings: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")} | settings


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line holds `text` (a data dir: what `up` would leave)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_up_prints_one_ready_block_and_stops_everything_it_started(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    system = start_system(tmp_path / "data")
    started = descendants(system.process.pid)
    key = (tmp_path / "data" / "demo-agency.key").read_text().strip()
    terminal = system.terminal()
    assert key.startswith("bt_") and key in terminal  # shown once, on first run
    assert terminal.count("Bantin is ready") == 1
    ready = terminal.split("Bantin is ready", 1)[1]
    assert f"{system.gateway_url}/" in ready and f"{system.ingest_url}/docs" in ready
    assert "publish examples/000_4fbfac1c975a2018.txt --key" in ready
    assert str(system.log_path) in ready and "Ctrl-C stops everything" in ready
    # Celery's banners and the children's INFO lines go to the log file, not over the key.
    assert "[tasks]" not in terminal and "[tasks]" in system.log()
    # The log holds everything the terminal showed but the key: its display prefix only, and
    # only the owner may read it.
    assert key not in system.log() and key[:16] + "…" in system.log()
    # The demo editor's one-time console link: on the terminal, masked in the log, and live.
    link = re.search(rf"{re.escape(system.ingest_url)}/console/invite/\S+", ready)
    assert link is not None and link[0] not in system.log()
    assert f"{system.ingest_url}/console/invite/…" in system.log()
    assert httpx.get(link[0]).status_code == 200
    assert (system.log_path.stat().st_mode & 0o777) == 0o600
    state = system.run_state()
    assert state is not None and state["pid"] == system.process.pid
    assert state["ingest_url"] == system.ingest_url and state["gateway_url"] == system.gateway_url
    # ingest, gateway, two workers (each with pool children), reconciler, embedded Redis
    assert len(started) >= 7, started

    system.process.send_signal(stop_signal)
    assert stop_system(system) == 0
    assert [pid for pid in started if alive(pid)] == []
    assert not (tmp_path / "data" / "redis" / "url").exists()
    assert system.run_state() is None
    assert "stopped" in system.log().splitlines()[-1]
    assert "stopped" in system.terminal().splitlines()[-1]


@pytest.mark.parametrize("taken", ["BANTIN_GATEWAY_PORT", "BANTIN_INGEST_PORT"])
def test_a_port_in_use_stops_up_at_once_naming_the_setting(tmp_path: Path, taken: str) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = {"BANTIN_GATEWAY_PORT": str(free_port()), "BANTIN_INGEST_PORT": str(free_port())}
        ports[taken] = str(squatter.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", "up"],
            env=_env_without_settings(BANTIN_DATA_DIR=str(data_dir), **ports),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"port {ports[taken]} on 127.0.0.1 is already in use" in done.stderr
    assert f"set {taken} to a free port" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert _processes_naming(str(data_dir)) == []  # no embedded Redis, no child left
    assert not data_dir.exists()  # it stopped before touching anything


def test_custom_ports_are_in_the_ready_block_and_a_second_start_keeps_data(
    tmp_path: Path,
) -> None:
    """Two checks on one data dir, sparing a start (each costs 10-25 s): the first start's
    custom ports, then a second start after a clean stop."""
    # Only the two ports: the public URL must follow the gateway's port by itself.
    first = start_system(tmp_path / "data", unset=("BANTIN_PUBLIC_URL",))
    try:
        ready = first.terminal().split("Bantin is ready", 1)[1]
        assert f"site        {first.gateway_url}/" in ready
        assert f"{first.ingest_url}/docs" in ready
        lines = ready.splitlines()
        command = lines[lines.index("  publish the sample bulletin from another terminal:") + 1]
        # The printed command, run as printed from another shell with no BANTIN_* ports:
        # it finds the instance through the data dir named in it.
        done = subprocess.run(
            ["bash", "-c", command.strip()],
            env=_env_without_settings(), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        url = done.stdout.strip().splitlines()[-1]
        assert url.startswith(f"{first.gateway_url}/bac-kan/"), url
        assert httpx.get(url, timeout=10).status_code == 200
    finally:
        stop_system(first)

    # The second start keeps the data and shows no new key.
    second = start_system(tmp_path / "data")
    try:
        key = (tmp_path / "data" / "demo-agency.key").read_text().strip()
        assert "demo agency" not in second.log() and key not in second.terminal()
        assert "demo key    in" in second.terminal()
        with second.api(key) as api:
            answer = api.post("/v1/bulletins", json={"title": "Lần hai", "body": "Vẫn chạy."})
            assert answer.status_code == 202
            assert second.wait_published(api, answer.json()["id"])["status"] == "published"
    finally:
        stop_system(second)


def _start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks after boot, /proc/<pid>/stat field 22); None if it is
    gone or a zombie. With the pid, it names one process even once the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _described(pid: int) -> str:
    """A process as a failure should name it: its parent and command line."""
    try:
        ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    return f"parent {ppid}: {command[:200]}"


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) gives the supervisor no chance to stop anything: its children
    must not live on holding the ports, or the next `bantin up` cannot start."""
    import time

    system = start_system(tmp_path / "data")
    # Each child by pid and start time: on a busy machine a pid freed by a child that exited
    # may be reused by some unrelated process within the wait, which must neither count as
    # left behind nor be killed below.
    started = {pid: when for pid in descendants(system.process.pid) if (when := _start_time(pid))}
    assert len(started) >= 7, started

    def still_running() -> list[int]:
        return [pid for pid, when in started.items() if _start_time(pid) == when]

    os.kill(system.process.pid, signal.SIGKILL)
    system.process.wait(10)
    deadline = time.monotonic() + 60
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: _described(pid) for pid in still_running()}
    if left:  # leave nothing behind for the next test, then fail
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert left == {}, system.log()[-3000:]
    again = start_system(tmp_path / "data")  # the data dir starts again: no stale run state
    assert stop_system(again) == 0
