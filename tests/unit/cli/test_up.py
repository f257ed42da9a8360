"""The supervisor's pieces: port checks, what reaches the terminal, the ready block, and a
child dying during start-up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.cli import up
from shared import testing
from shared.settings import Settings


def test_a_port_in_use_is_named_with_its_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = up.bind_problem("127.0.0.1", port, "BANTIN_INGEST_PORT", "BANTIN_INGEST_HOST")
    assert problem is not None
    assert f"port {port} on 127.0.0.1 is already in use" in problem
    assert "BANTIN_INGEST_PORT" in problem
    # Free again once closed (SO_REUSEADDR: a port in TIME_WAIT counts as free, as in uvicorn).
    assert up.bind_problem("127.0.0.1", port, "BANTIN_INGEST_PORT", "BANTIN_INGEST_HOST") is None


def test_a_host_that_is_not_this_machine_is_named() -> None:
    problem = up.bind_problem("192.0.2.1", 8000, "BANTIN_GATEWAY_PORT", "BANTIN_GATEWAY_HOST")
    assert problem == "BANTIN_GATEWAY_HOST=192.0.2.1 is not an address of this machine"


def test_the_same_port_for_both_servers_is_refused() -> None:
    settings = Settings(gateway_port=18555, ingest_port=18555)
    assert up.port_problems(settings) == [
        "BANTIN_GATEWAY_PORT and BANTIN_INGEST_PORT are both 18555: give them different ports"
    ]


@pytest.mark.parametrize(
    ("lines", "shown"),
    [
        (["2024-05-01 10:00:00,123 INFO render shared.x: rendered"], [False]),
        (["2024-05-01 10:00:00,123 WARNING render shared.x: slow"], [True]),
        (
            ["2024-05-01 10:00:00,123 ERROR render x: boom", "Traceback (most recent call last):",
             '  File "x.py", line 1', "ValueError: bad", "2024-05-01 10:00:01,000 INFO r x: ok"],
            [True, True, True, True, False],
        ),
        (["[2024-05-01 10:00:00,123: ERROR/MainProcess] Task failed", "  detail"], [True, True]),
        (["[2024-05-01 10:00:00,123: INFO/MainProcess] Connected to redis"], [False]),
        (["ERROR:    [Errno 98] address already in use", "INFO:     Started"], [True, False]),
        (['{"time": "t", "level": "ERROR", "message": "m"}', '{"level": "INFO"}'], [True, False]),
        (["x.py:3: DeprecationWarning: old", "  call()", " -------------- render@h v5"],
         [True, True, False]),
        # Celery's warning about running as root, on every start in a container: log only.
        (["/c/platforms.py:893: SecurityWarning: You're running the worker with superuser "
          "privileges: this is", "absolutely not recommended!"], [False, False]),
        (["Traceback (most recent call last):", "  File ...", "KeyError: 'x'"], [True] * 3),
    ],
)  # fmt: skip
def test_the_terminal_shows_warnings_errors_and_tracebacks_only(
    lines: list[str], shown: list[bool]
) -> None:
    problem = up.ProblemFilter()
    assert [problem(line) for line in lines] == shown


def test_the_ready_block_of_a_first_run_holds_the_key_and_the_publish_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "var", gateway_port=18000, ingest_port=18001)
    settings.data_dir.mkdir()
    (settings.data_dir / "demo-agency.key").write_text("bt_secret\n")
    demo = up.Demo("bt_secret", "http://127.0.0.1:18001/console/invite/tok")
    text = "\n".join(up.ready_block(settings, demo, tmp_path / "var/log/bantin.log"))
    assert "http://127.0.0.1:18000/" in text  # the site
    assert "http://127.0.0.1:18001/docs" in text
    assert "http://127.0.0.1:18001/console/" in text
    assert "bt_secret" in text
    assert f"{up.DEMO_EDITOR}: open this link once" in text and demo.console_link in text
    assert "publish " in text and '--key "$(cat var/demo-agency.key)"' in text
    assert "BANTIN_DATA_DIR" not in text  # ./var is the default: another shell finds it
    assert "var/log/bantin.log" in text and "Ctrl-C stops everything" in text


def test_a_later_run_names_the_key_file_but_not_the_key_and_a_custom_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "elsewhere")
    settings.data_dir.mkdir()
    (settings.data_dir / "demo-agency.key").write_text("bt_secret\n")
    text = "\n".join(up.ready_block(settings, None, tmp_path / "elsewhere/log/bantin.log"))
    assert "bt_secret" not in text and "/console/invite/" not in text
    assert "demo key    in elsewhere/demo-agency.key" in text
    assert "user invite EMAIL --agency SLUG" in text
    assert "BANTIN_DATA_DIR=elsewhere " in text  # the publish command finds this instance


def test_the_bantin_command_is_the_one_that_was_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / ".venv" / "bin" / "bantin"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/bantin", "up"])
    assert up.bantin_command() == ".venv/bin/bantin"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert up.bantin_command() == "bantin"


def test_the_harness_reads_the_files_up_writes(tmp_path: Path) -> None:
    assert up.log_file(tmp_path) == tmp_path.resolve() / testing.LOG_FILE
    assert up.run_state_file(tmp_path) == tmp_path.resolve() / testing.RUN_STATE_FILE


def test_a_run_state_left_by_a_dead_supervisor_is_ignored(tmp_path: Path) -> None:
    state = {"pid": os.getpid(), "ingest_url": "http://127.0.0.1:1"}
    up.run_state_file(tmp_path).write_text(json.dumps(state))
    assert up.read_run_state(tmp_path) == state
    process = subprocess.Popen(["true"])
    process.wait()  # its pid now names no process
    up.run_state_file(tmp_path).write_text(json.dumps(state | {"pid": process.pid}))
    assert up.read_run_state(tmp_path) is None
    up.run_state_file(tmp_path).write_text("{garbled")
    assert up.read_run_state(tmp_path) is None


def test_a_child_dying_during_start_up_stops_everything_with_its_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    dying = up.Child("gateway", [sys.executable, "-c", "print('cannot start: boom'); exit(3)"])
    waiting = up.Child("render", [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(up, "children", lambda settings: [dying, waiting])
    output = up.Output(up.log_file(tmp_path), verbose=False)
    assert up.Supervisor(settings, output).run() == 1
    output.close()
    printed = capsys.readouterr().out
    assert "gateway exited with code 3 before the system was ready" in printed
    assert "cannot start: boom" in printed  # its last lines, on the terminal
    assert str(up.log_file(tmp_path)) in printed
    assert waiting.process is not None and waiting.process.poll() is not None  # stopped
    assert not up.run_state_file(tmp_path).exists()
    assert "gateway   | cannot start: boom" in up.log_file(tmp_path).read_text()


def test_a_system_not_ready_in_time_says_which_part_and_where_the_log_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0", ingest_port=port)
    sleeper = up.Child("ingest", [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(up, "children", lambda settings: [sleeper])
    monkeypatch.setattr(up, "READY_TIMEOUT", 0.3)
    output = up.Output(up.log_file(tmp_path), verbose=False)
    supervisor = up.Supervisor(settings, output)
    threading.Timer(2.0, supervisor.stopping.set).start()  # Ctrl-C, two seconds later
    assert supervisor.run() == 0
    output.close()
    printed = capsys.readouterr().out
    assert (
        f"not ready after 0 s: ingest (its /healthz) does not answer at "
        f"http://127.0.0.1:{port}/healthz (ConnectError); see {up.log_file(tmp_path)}"
    ) in printed
    assert "Bantin is ready" not in printed and not up.run_state_file(tmp_path).exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_every_child_line_reaches_the_log_and_only_problems_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    output = up.Output(tmp_path / "log" / "bantin.log", verbose=verbose)
    child = up.Child("render", [])
    output.child(child, "[tasks]", problem=False)
    output.child(child, "ERROR: boom", problem=True)
    output.say("restarting render")
    output.close()
    log = (tmp_path / "log" / "bantin.log").read_text()
    assert "render    | [tasks]" in log and "render    | ERROR: boom" in log
    assert "bantin    | restarting render" in log
    printed = capsys.readouterr().out
    assert "render    | ERROR: boom" in printed and "restarting render" in printed
    assert ("[tasks]" in printed) is verbose
