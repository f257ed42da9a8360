"""`bantin up` as an operator meets it: first-run output, and a clean stop on Ctrl-C/SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from shared.testing import alive, descendants, start_system, stop_system


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_up_prints_the_demo_key_and_stops_everything_it_started(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    system = start_system(tmp_path / "data")
    started = descendants(system.process.pid)
    log = system.log()
    key = (tmp_path / "data" / "demo-agency.key").read_text().strip()
    assert key.startswith("bt_") and key in log  # shown once, on first run
    assert system.gateway_url in log and system.ingest_url in log
    # ingest, gateway, two workers (each with pool children), reconciler, embedded Redis
    assert len(started) >= 7, started

    system.process.send_signal(stop_signal)
    assert stop_system(system) == 0
    assert [pid for pid in started if alive(pid)] == []
    assert not (tmp_path / "data" / "redis" / "url").exists()
    assert "stopped" in system.log().splitlines()[-1]


def test_a_second_start_keeps_data_and_shows_no_new_key(tmp_path: Path) -> None:
    first = start_system(tmp_path / "data")
    stop_system(first)
    second = start_system(tmp_path / "data")
    try:
        assert "demo agency" not in second.log()
        with second.api((tmp_path / "data" / "demo-agency.key").read_text().strip()) as api:
            answer = api.post("/v1/bulletins", json={"title": "Lần hai", "body": "Vẫn chạy."})
            assert answer.status_code == 202
            assert second.wait_published(api, answer.json()["id"])["status"] == "published"
    finally:
        stop_system(second)
