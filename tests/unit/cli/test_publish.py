"""`bantin publish` finds the running instance and says what it tried."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.cli.up import run_state_file

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "000_4fbfac1c975a2018.txt"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_a_key_it_points_at_the_demo_key_without_using_it(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "demo-agency.key").write_text("bt_demo\n")
    result = CliRunner().invoke(main, ["publish", str(SAMPLE)])
    assert result.exit_code == 2
    assert "no API key: give --key KEY or set BANTIN_API_KEY" in result.output
    assert f'--key "$(cat {data_dir / "demo-agency.key"})"' in result.output


def test_it_uses_the_running_instance_and_names_the_url_it_could_not_reach(
    data_dir: Path,
) -> None:
    port = _closed_port()
    data_dir.mkdir()
    # A live pid (this test's), as a running `bantin up` leaves it.
    state = {"pid": os.getpid(), "ingest_url": f"http://127.0.0.1:{port}"}
    run_state_file(data_dir).write_text(json.dumps(state))
    result = CliRunner().invoke(main, ["publish", str(SAMPLE), "--key", "bt_x"])
    assert result.exit_code == 1
    assert f"cannot reach the ingest API at http://127.0.0.1:{port}" in result.output
    assert "(from the running `bantin up`" in result.output
    assert "--api URL" in result.output and "Traceback" not in result.output


def test_with_no_instance_it_falls_back_to_the_settings(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _closed_port()
    monkeypatch.setenv("BANTIN_INGEST_PORT", str(port))
    result = CliRunner().invoke(main, ["publish", str(SAMPLE), "--key", "bt_x"])
    assert result.exit_code == 1
    assert f"cannot reach the ingest API at http://127.0.0.1:{port} (from the settings" in (
        result.output
    )
