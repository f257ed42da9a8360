"""Fault-injection tests: real processes, really killed. Each test gets its own system."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Bulletin
from tests.system import System, start_system, stop_system

# Short clocks so recovery is quick to observe; feeds long enough to hold every test bulletin,
# so "exactly once in each feed" can be checked for all of them.
FAULT_ENV = {
    "BANTIN_FAULT_INJECTION": "1",
    "BANTIN_REQUEUE_AFTER_SECONDS": "3",
    "BANTIN_RECONCILE_INTERVAL_SECONDS": "0.5",
    "BANTIN_VERIFY_INTERVAL_SECONDS": "2",
    "BANTIN_FEED_ITEMS": "250",
    "BANTIN_MAX_ATTEMPTS": "3",
}


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = start_system(tmp_path / "data", extra_env=FAULT_ENV)
    yield running
    stop_system(running)


def report(name: str, **figures: Any) -> None:
    """Figures the closing note quotes: printed, and appended to var/fault-report.jsonl."""
    line = json.dumps({"test": name, **figures}, ensure_ascii=False)
    print(line)
    out = Path(__file__).resolve().parents[2] / "var" / "fault-report.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as handle:
        handle.write(line + "\n")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition` holds; returns when (monotonic). Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)
    return time.monotonic()


def statuses(system: System) -> Counter[str]:
    with session_scope(system.settings()) as session:
        rows = session.execute(select(Bulletin.status, func.count()).group_by(Bulletin.status))
        return Counter(dict(rows.all()))


def feed_guids(system: System, path: str) -> Counter[str]:
    parsed = feedparser.parse(httpx.get(system.gateway_url + path, timeout=10).content)
    assert parsed.bozo == 0, (path, parsed.get("bozo_exception"))
    return Counter(entry.id for entry in parsed.entries)


def assert_all_published_once(system: System, expected: dict[int, dict[str, Any]]) -> None:
    """Every bulletin published, its page served, and in each of its feeds exactly once."""
    with session_scope(system.settings()) as session:
        rows = {b.id: b for b in session.scalars(select(Bulletin))}
        bulletins = {
            i: (rows[i].status, rows[i].guid, rows[i].agency.slug, rows[i].category_slug)
            for i in expected
        }
    assert {i: b[0] for i, b in bulletins.items()} == dict.fromkeys(expected, "published")
    for accepted in expected.values():
        assert httpx.get(accepted["url"], timeout=10).status_code == 200, accepted["url"]
    feeds: dict[str, Counter[str]] = {}
    for _status, guid, agency, category in bulletins.values():
        paths = ["/feeds/all.rss", f"/feeds/agency/{agency}.rss", f"/feeds/agency/{agency}.atom"]
        if category:
            paths.append(f"/feeds/category/{category}.atom")
        for path in paths:
            if path not in feeds:
                feeds[path] = feed_guids(system, path)
            assert feeds[path][guid] == 1, (path, guid, feeds[path][guid])
