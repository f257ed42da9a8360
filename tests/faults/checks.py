"""What fault tests check at the end: counts, pages, feed items."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser
import httpx
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import Bulletin
from shared.testing import System


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


def wait_until_complete(system: System, expected: dict[int, dict[str, Any]]) -> float:
    """Wait until `assert_all_published_once` holds; returns when. On time-out, its own
    assertion says what is missing."""

    def complete() -> bool:
        try:
            assert_all_published_once(system, expected)
            return True
        except AssertionError:
            return False

    try:
        return wait_for(complete, 60, "every page and feed complete")
    except AssertionError:
        assert_all_published_once(system, expected)
        raise
