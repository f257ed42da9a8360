"""`bantin status`'s report as a table and its problems, from fixed inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import main
from services.cli import status as status_module
from services.cli.status import collect, latency, percentile, problems, render

NOW = 1_700_000_000.0


def _process(role: str, pid: int, **extra: Any) -> dict[str, Any]:
    return {"role": role, "name": f"{role}.{pid}@web1", "pid": pid, "host": "web1",
            "age_seconds": 1.2, "uptime_seconds": 3600.0,
            "metrics_url": f"http://web1:9{pid}/metrics", "info": {}} | extra  # fmt: skip


def healthy() -> dict[str, Any]:
    roles = ("feed", "gateway", "ingest", "reconciler", "render", "deliver")
    reconciler_info = {"last_pass_at": NOW - 1.5, "last_pass": {"released": 1, "requeued": 0}}
    report: dict[str, Any] = {
        "ok": True,
        "checked_at": NOW,
        "problems": [],
        "redis": {"url": "redis://127.0.0.1:6379/0", "error": None},
        "database": {"url": "postgresql://bantin:***@db/bantin", "error": None},
        "processes": [_process(role, 100 + i) for i, role in enumerate(roles)],
        "queues": [
            {"queue": "render", "depth": 12, "oldest_age_seconds": 3.4},
            {"queue": "feed", "depth": 0, "oldest_age_seconds": None},
        ],
        "bulletins": {"queued": 12, "scheduled": 2, "failed": 0},
        "errors": [],
        "reconciler": {
            "name": "reconciler.103@web1",
            "age_seconds": 0.4,
            "info": reconciler_info,
        },  # fmt: skip
        "latency": latency([0.2, 0.3, 0.25, 1.5]),
    }
    return report


def test_a_healthy_system_reads_as_one_table_and_all_well() -> None:
    text = render(healthy())
    assert "PROCESSES" in text and "reconciler.103@web1" in text
    assert "http://web1:9104/metrics" in text
    queues = text.split("QUEUES", 1)[1].split("BULLETINS", 1)[0]
    assert [line.split() for line in queues.strip().splitlines()] == [
        ["QUEUE", "WAITING", "OLDEST"], ["render", "12", "3.4", "s"], ["feed", "0", "-"],
    ]  # fmt: skip
    assert "queued 12   scheduled 2   failed 0" in text
    assert "last_pass 1.5 s ago" in text and "last_pass (released=1 requeued=0)" in text
    assert "4 rendered   p50 0.250 s   p95 1.500 s   max 1.500 s" in text
    assert text.rstrip().endswith("All well.")
    assert problems(healthy()) == []


def test_a_missing_worker_and_failed_bulletins_are_problems_with_their_errors() -> None:
    report = healthy()
    report["processes"] = [p for p in report["processes"] if p["role"] != "render"]
    report["bulletins"]["failed"] = 2
    report["errors"] = [
        {"bulletin_id": 42, "agency": "bac-kan", "revision": 3, "status": "failed",
         "last_error": "OSError: disk full\nmore", "updated_at": NOW - 300},
    ]  # fmt: skip
    report["problems"] = problems(report)
    assert report["problems"] == [
        "no render process alive (no heartbeat in the last seconds)",
        "2 failed bulletin(s) (errors below); `bantin retry-failed` re-queues them",
    ]
    text = render(report)
    assert "NOT RUNNING: render" in text
    error_line = next(line for line in text.splitlines() if line.strip().startswith("42 "))
    assert error_line.split() == ["42", "bac-kan", "3", "failed", "5", "min", "ago", "OSError:",
                                  "disk", "full", "more"]  # fmt: skip
    assert "PROBLEMS (2)" in text and "! no render process alive" in text


def test_a_backend_down_shows_what_is_known_and_says_what_is_missing() -> None:
    report = healthy() | {"processes": None, "queues": None, "reconciler": None}
    report["redis"]["error"] = "ConnectionError: Connection refused"
    report["problems"] = problems(report)
    assert report["problems"] == ["Redis unreachable: ConnectionError: Connection refused"]
    text = render(report)
    assert "redis://127.0.0.1:6379/0 (unreachable)" in text
    assert "unknown: Redis is unreachable" in text
    assert "queued 12" in text  # the database still answers


def test_work_waiting_too_long_is_a_problem() -> None:
    report = healthy()
    report["queues"][0]["oldest_age_seconds"] = 400.0
    assert problems(report) == ["render queue: work waiting for 7 min"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 1.0)) == (
        50.0, 95.0, 100.0,
    )  # fmt: skip
    assert latency([]) == {"window_seconds": 60.0, "count": 0, "p50_seconds": None,
                           "p95_seconds": None, "max_seconds": None}  # fmt: skip


def test_with_nothing_running_status_says_so_and_exits_1(data_dir: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert set(report) == {"ok", "checked_at", "problems", "redis", "database", "processes",
                           "queues", "queues_error", "bulletins", "errors", "reconciler",
                           "latency"}  # fmt: skip
    # The keys the docstring (the documented --json contract) lists are exactly these.
    bullets = re.findall(r"^- (.*)$", status_module.__doc__ or "", re.M)
    documented = {key for line in bullets for key in re.findall(r"`(\w+)`", line.split(": ")[0])}
    assert documented == set(report)
    assert '"silent"' in (status_module.__doc__ or "")  # each process's flag, documented too
    assert report["ok"] is False
    assert "no embedded Redis is running" in report["problems"][0]
    assert "no database file at" in report["problems"][1]
    assert not data_dir.exists()  # status created nothing, not even an empty database


def test_the_table_names_every_section_even_when_nothing_is_known(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.settings import get_settings

    text = render(collect(get_settings()))
    for section in ("PROCESSES", "QUEUES", "BULLETINS", "RECONCILER", "PUBLISH LATENCY"):
        assert section in text
    assert "Traceback" not in text


def test_a_silent_process_is_marked_and_not_counted_alive() -> None:
    """A killed or stopped process keeps its beat until the key expires: status must not read
    that as alive (the render worker was SIGSTOPped, or SIGKILLed and not yet replaced)."""
    report = healthy()
    report["processes"] = [
        p | {"age_seconds": 8.2, "silent": True} if p["role"] == "render" else p
        for p in report["processes"]
    ]
    assert problems(report) == ["no render process alive (no heartbeat in the last seconds)"]
    text = render(report | {"problems": problems(report)})
    assert "8.2 s ago, SILENT" in text and "SILENT: no heartbeat for over 5 s" in text
    # A replacement that beats makes the role alive again; the ghost stays marked.
    report["processes"].append(_process("render", 200))
    assert problems(report) == []
    assert "8.2 s ago, SILENT" in render(report)


def test_a_reconciler_that_beats_but_does_not_pass_is_a_problem() -> None:
    """Its heartbeat is a side thread: a loop stuck in a pass still beats."""
    from shared.settings import Settings

    report = healthy()
    report["reconciler"]["info"]["last_pass_at"] = NOW - 29.0
    assert problems(report) == []
    report["reconciler"]["info"]["last_pass_at"] = NOW - 45.0
    assert problems(report) == ["reconciler alive but its last pass was 45 s ago: stuck?"]
    # A slow interval allows more: five intervals of 20 s.
    slow = Settings(reconcile_interval_seconds=20.0)
    assert problems(report, slow) == []
    report["reconciler"]["info"]["last_pass_at"] = NOW - 101.0
    assert problems(report, slow) == ["reconciler alive but its last pass was 101 s ago: stuck?"]


def test_a_reconciler_up_for_long_without_any_pass_is_a_problem() -> None:
    report = healthy()
    report["reconciler"]["info"] = {}  # up an hour, no pass reported
    assert problems(report) == ["reconciler alive but no pass finished in its 60 min up: stuck?"]
    reconciler = next(p for p in report["processes"] if p["role"] == "reconciler")
    reconciler["uptime_seconds"] = 10.0  # just started: its first pass may still run
    assert problems(report) == []
    # A silent one is not alive at all, and said so once.
    reconciler |= {"uptime_seconds": 3600.0, "silent": True}
    assert problems(report) == ["no reconciler process alive (no heartbeat in the last seconds)"]


def test_publish_latency_counts_from_the_embargos_end_not_the_acceptance(data_dir: Path) -> None:
    from datetime import timedelta

    from services.cli.status import gather_database
    from shared.db import create_schema, session_scope
    from shared.models import Agency, Bulletin, BulletinStatus, utcnow
    from shared.settings import get_settings

    settings = get_settings()
    create_schema(settings)
    now = utcnow()

    def ago(seconds: float) -> Any:
        return now - timedelta(seconds=seconds)

    with session_scope(settings) as session:
        agency = Agency(slug="so-y-te", name="Sở Y tế")
        session.add(agency)
        session.flush()
        for slug, accepted, published, rendered in (
            ("embargoed", ago(3600), ago(3), ago(1)),  # accepted an hour ago, owed for 2 s
            ("backdated", ago(2), ago(86400), ago(1.5)),  # published "yesterday", owed 0.5 s
        ):
            session.add(
                Bulletin(
                    agency_id=agency.id, slug=slug, title=slug, body_format="text",
                    body_source=slug, body_html="<p>x</p>", status=BulletinStatus.PUBLISHED,
                    published_at=published, updated_at=accepted, rendered_at=rendered,
                    pending_since=None, revision=1, rendered_revision=1,
                )
            )  # fmt: skip
    report: dict[str, Any] = {}
    gather_database(settings, report)
    assert report["database"]["error"] is None
    assert report["latency"] | {"window_seconds": None} == {
        "window_seconds": None, "count": 2, "p50_seconds": 0.5, "p95_seconds": 2.0,
        "max_seconds": 2.0,
    }  # fmt: skip
