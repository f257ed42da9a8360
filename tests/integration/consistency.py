"""What the edge and race tests share: clients racing from threads, waiting for a bulletin to
settle, and reading what the public sees (rows, pages, feeds, index pages) to compare it with
what the clients were told.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

import feedparser
import httpx
from sqlalchemy import select

from shared.agencies import create_agency
from shared.db import session_scope
from shared.models import Agency, Bulletin
from shared.testing import System

T = TypeVar("T")

SETTLE_TIMEOUT = 90.0  # whole batches of bulletins, on 2 busy cores
# Pages and listings follow the row within a second; the reconciler's repairs (a listing
# rebuilt after its verification, every 10 s) within two of its passes.
PUBLIC_TIMEOUT = 45.0
DROPPED = 599  # not HTTP: the connection was dropped (uvicorn closes it after a crash)
# Statuses in which nothing more happens to a bulletin without a client's change (an
# embargo far in the future never comes due during a test).
SETTLED = {"published", "withdrawn", "scheduled"}


def new_agency(system: System, name: str = "Sở Thông tin và Truyền thông") -> tuple[str, str]:
    """A fresh agency: (slug, key). Its feed and index page then hold only this test's items.
    Made in the system's database directly: the CLI's process start costs ~2 s a call."""
    slug = f"co-quan-{uuid.uuid4().hex[:8]}"
    with session_scope(system.settings()) as session:
        _agency, key = create_agency(session, name=name, slug=slug)
    return slug, key


def token() -> str:
    """A short unique word for titles, so a page or feed entry is found by its own text."""
    return uuid.uuid4().hex[:10]


def send(api: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request whose dropped connection is an answer too (status DROPPED), so a test can
    count it with the 5xx instead of stopping at the first one."""
    try:
        return api.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        request = api.build_request(method, url, **kwargs)
        return httpx.Response(DROPPED, text=f"connection dropped: {exc!r}", request=request)


class Staircase:
    """Delays that home in on the moment a bulletin's first render commits, where the races
    of a change with that render live: a change that came before the render lengthens the
    next delay, one that came after shortens it, and jitter spreads the rounds around it.
    The first delays are 0-30 ms after the submission's answer."""

    def __init__(self, seed: int, step: float = 0.005, jitter: float = 0.015) -> None:
        self.rng, self.step, self.jitter = random.Random(seed), step, jitter
        self.centre, self.limit = jitter, 0.25

    def delay(self) -> float:
        return min(self.limit, max(0.0, self.centre + self.rng.uniform(-self.jitter, self.jitter)))

    def came(self, *, early: bool) -> None:
        moved = self.centre + (self.step if early else -self.step)
        self.centre = min(self.limit, max(0.0, moved))


def in_parallel(tasks: Iterable[Callable[[], T]], workers: int) -> list[T]:
    """Run each task on a pool of `workers` threads; results in order. A task's exception is
    raised here, after every task has finished."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [future.result() for future in futures]


def race(tasks: Sequence[Callable[[], Any]], timeout: float = 30) -> list[Any]:
    """Start every task at the same moment (a barrier), each on its own thread."""
    barrier = threading.Barrier(len(tasks), timeout=timeout)

    def started(task: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            barrier.wait()
            return task()

        return run

    return in_parallel([started(task) for task in tasks], workers=len(tasks))


def is_settled(document: dict[str, Any]) -> bool:
    """Nothing is owed to this bulletin: its current revision is rendered (or, scheduled,
    waits for its embargo)."""
    assert document["status"] != "failed", f"bulletin failed: {document}"
    if document["status"] == "scheduled":
        return True
    return document["status"] in SETTLED and document["rendered_revision"] == document["revision"]


def wait_settled(
    api: httpx.Client, ids: Iterable[int], timeout: float = SETTLE_TIMEOUT
) -> dict[int, dict[str, Any]]:
    """The status documents of these bulletins once each has settled (bounded)."""
    deadline = time.monotonic() + timeout
    settled: dict[int, dict[str, Any]] = {}
    waiting = list(ids)
    while waiting:
        still: list[int] = []
        for bulletin_id in waiting:
            answer = api.get(f"/v1/bulletins/{bulletin_id}")
            assert answer.status_code == 200, answer.text
            document = answer.json()
            if is_settled(document):
                settled[bulletin_id] = document
            else:
                still.append(bulletin_id)
        waiting = still
        if waiting:
            assert time.monotonic() < deadline, (
                f"{len(waiting)} bulletins never settled in {timeout} s, e.g. "
                f"{api.get(f'/v1/bulletins/{waiting[0]}').json()}"
            )
            time.sleep(0.2)
    return settled


def until_consistent(mismatches: Callable[[], list[str]], timeout: float = PUBLIC_TIMEOUT) -> None:
    """Poll `mismatches` (what the public sees against what was promised) until it is empty;
    fail with what is still wrong after `timeout`."""
    deadline = time.monotonic() + timeout
    while wrong := mismatches():
        if time.monotonic() > deadline:
            shown = "\n".join(wrong[:25])
            raise AssertionError(f"{len(wrong)} mismatches after {timeout} s:\n{shown}")
        time.sleep(0.5)


@cache
def reader() -> httpx.Client:
    """One client for every public read: a new one costs tens of ms (TLS setup), which made a
    check of a few hundred pages take longer than the repairs it waits for."""
    return httpx.Client(timeout=10)


def feed_entries(system: System, path: str) -> dict[str, str]:
    """guid → title of a feed's entries ({} while the feed does not exist yet)."""
    response = reader().get(system.gateway_url + path)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, (path, response.status_code)
    parsed = feedparser.parse(response.content)
    assert parsed.bozo == 0, (path, parsed.get("bozo_exception"))
    return {entry.id: entry.title for entry in parsed.entries}


def public_status(url: str) -> int:
    return reader().get(url).status_code


def index_page(system: System, path: str) -> str:
    """An index page's text ('' while it does not exist yet)."""
    response = reader().get(system.gateway_url + path)
    return response.text if response.status_code == 200 else ""


def rows_by_agency(system: System, slug: str) -> Counter[str]:
    """Titles of every stored bulletin of an agency, read from the database itself."""
    with session_scope(system.settings()) as session:
        titles = session.scalars(
            select(Bulletin.title)
            .join(Agency, Bulletin.agency_id == Agency.id)
            .where(Agency.slug == slug)
        )
        return Counter(titles)


def path_of(url: str, system: System) -> str:
    return url.removeprefix(system.gateway_url)
