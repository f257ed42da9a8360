"""Scenario 8: WebSub push latency, page written → subscriber received, and what dead
subscribers cost the healthy ones.

    python -m bench push-latency                     # through the harness (table, markdown)
    python -m bench.push_latency [--subscribers 100] [--publishes 200] [--rate 4] [--dead 10]

One real system (`bantin up`), one loopback subscriber server standing for every subscriber
(a path each, HTTP/1.1 keep-alive, as a real subscriber would). The agency's Atom feed gets
`--subscribers` healthy subscribers; bulletins are published open loop at `--rate` per second.
For each (bulletin, subscriber), latency is the first push whose feed lists the bulletin,
received (the subscriber's clock), minus the bulletin's `rendered_at` (its page written,
committed with the row: the same machine's clock). Then `--dead` more subscribers, whose
server is gone (connections refused), join, and the same run is repeated: the healthy ones'
latency with and without them. A benchmark: it reports, never fails on a number.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from bench.core import Options, Result
from bench.latency import percentile
from bench.system import running_system
from shared.db import session_scope
from shared.models import Bulletin, Subscription, SubscriptionState
from shared.testing import System, eventually

NAME = "8 push latency"
ENV = {
    "BANTIN_HUB_ALLOW_PRIVATE_CALLBACKS": "true",  # the subscribers are on loopback
    "BANTIN_HUB_MAX_PER_HOST": "10000",  # ... all on one host
}
_ID = re.compile(rb"<id>([^<]+)</id>")
# Per bulletin, its first subscriber's latency (the last run's): the pipeline's delay before
# pushes start (feed build, fan-out), as against the spread of one round of pushes.
FIRST_PUSH_MS: list[float] = []


@dataclass
class Receiver:
    """Every push's arrival time and body (parsed after the run, not while timing)."""

    server: ThreadingHTTPServer
    arrivals: list[tuple[str, float, bytes]] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_receiver() -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the hub's client does

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            challenge = parse_qs(urlsplit(self.path).query).get("hub.challenge", [""])[0]
            self._reply(200, challenge.encode())

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.arrivals.append((self.path, time.time(), body))  # list.append: atomic
            self._reply(204, b"")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = start_receiver()
    try:
        yield receiver
    finally:
        receiver.stop()


def subscribe(system: System, topic: str, callbacks: list[str]) -> None:
    """Subscribe every callback and wait until all are active."""
    with httpx.Client(timeout=10) as http:
        for callback in callbacks:
            form = {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback,
                    "hub.lease_seconds": "86400", "hub.secret": "bench-secret"}  # fmt: skip
            answer = http.post(system.ingest_url + "/hub", data=form)
            assert answer.status_code == 202, answer.text

    def active() -> bool:
        with session_scope(system.settings()) as session:
            rows = session.scalars(
                select(Subscription.callback).where(
                    Subscription.topic == topic, Subscription.state == SubscriptionState.ACTIVE
                )
            )
            return set(callbacks) <= set(rows)

    eventually(active, f"{len(callbacks)} subscriptions active", 120)


async def publish_open_loop(system: System, key: str, count: int, rate: float) -> list[int]:
    """Bulletin ids, submitted on a fixed schedule whatever the system does."""
    ids: list[int] = []
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:

        async def submit(i: int) -> None:
            bulletin = {"title": f"Thông báo đẩy số {i}", "body": "Nội dung.",
                        "body_format": "text"}  # fmt: skip
            answer = await http.post(f"{system.ingest_url}/v1/bulletins", json=bulletin)
            answer.raise_for_status()
            ids.append(answer.json()["id"])

        started = time.monotonic()
        tasks = []
        for i in range(count):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(submit(i)))
        await asyncio.gather(*tasks)
    return ids


def latencies(
    system: System, receiver: Receiver, ids: list[int], paths: set[str], since: int
) -> tuple[list[float], int]:
    """Per (bulletin, healthy subscriber): first push listing it minus its page's write, in
    ms; and how many such pairs never arrived."""
    with session_scope(system.settings()) as session:
        rows = session.execute(
            select(Bulletin.guid, Bulletin.rendered_at).where(Bulletin.id.in_(ids))
        ).all()
    written = {row.guid: row.rendered_at.timestamp() for row in rows if row.rendered_at}
    first: dict[tuple[str, str], float] = {}
    parsed: dict[int, list[str]] = {}
    for path, at, body in receiver.arrivals[since:]:
        if path not in paths:
            continue
        guids = parsed.setdefault(hash(body), [m.decode() for m in _ID.findall(body)])
        for guid in guids:
            if guid in written and (guid, path) not in first:
                first[(guid, path)] = at
    values = [(at - written[guid]) * 1000 for (guid, _), at in first.items()]
    earliest: dict[str, float] = {}
    for (guid, _), at in first.items():
        earliest[guid] = min(at, earliest.get(guid, at))
    FIRST_PUSH_MS[:] = [(at - written[guid]) * 1000 for guid, at in earliest.items()]
    return values, len(written) * len(paths) - len(first)


def refused_url() -> str:
    with socket.socket() as sock:  # bound, then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def one_run(
    system: System, key: str, receiver: Receiver, paths: set[str], count: int, rate: float
) -> tuple[list[float], int]:
    since = len(receiver.arrivals)
    ids = asyncio.run(publish_open_loop(system, key, count, rate))
    # Until every healthy subscriber has the last bulletin (bounded), then measure.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        values, missing = latencies(system, receiver, ids, paths, since)
        if missing == 0:
            break
        time.sleep(0.5)
    return latencies(system, receiver, ids, paths, since)


@dataclass
class Figures:
    label: str
    values: list[float]
    missing: int
    first: list[float] = field(default_factory=list)

    def line(self) -> str:
        if not self.values:
            return f"{self.label}: nothing received ({self.missing} missing)"
        first = (f"; first subscriber p50 {percentile(self.first, 0.5):.0f} ms"
                 if self.first else "")  # fmt: skip
        return (f"{self.label}: p50 {percentile(self.values, 0.5):.0f} ms, "
                f"p99 {percentile(self.values, 0.99):.0f} ms, max {max(self.values):.0f} ms "
                f"(n={len(self.values)}, missing {self.missing}){first}")  # fmt: skip


def measure(
    options: Options, subscribers: int, publishes: int, rate: float, dead: int
) -> list[Figures]:
    figures = []
    with running_system(options, "push-latency", ENV) as system, receiving() as receiver:
        slug = f"push-{uuid.uuid4().hex[:6]}"
        key = system.create_agency("Sở Thông tin và Truyền thông", slug)
        topic = f"{system.gateway_url}/feeds/agency/{slug}.atom"
        paths = {f"/s/{i}" for i in range(subscribers)}
        subscribe(system, topic, [receiver.base + path for path in sorted(paths)])
        one_run(system, key, receiver, paths, 3, rate)  # warm every process up
        values, missing = one_run(system, key, receiver, paths, publishes, rate)
        figures.append(Figures(f"{subscribers} healthy", values, missing, list(FIRST_PUSH_MS)))
        if dead:
            with receiving() as doomed:  # answers the intent checks, then goes away
                subscribe(system, topic, [f"{doomed.base}/dead/{i}" for i in range(dead)])
            values, missing = one_run(system, key, receiver, paths, publishes, rate)
            label = f"{subscribers} healthy + {dead} refusing"
            figures.append(Figures(label, values, missing, list(FIRST_PUSH_MS)))
    return figures


def run(options: Options) -> list[Result]:
    subscribers, publishes = (20, 30) if options.quick else (100, options.size or 200)
    figures = measure(options, subscribers, publishes, rate=4.0, dead=10)
    results = []
    for figure in figures:
        print(figure.line())
        if not figure.values:
            results.append(Result(NAME, figure.label, "nothing received"))
            continue
        p99 = percentile(figure.values, 0.99)
        results += [
            Result(NAME, f"{figure.label}: p50", percentile(figure.values, 0.5), "ms"),
            Result(
                NAME,
                f"{figure.label}: p99",
                p99,
                "ms",
                "< 1000 ms",
                p99 < 1000,
                f"{publishes} publishes at 4/s, missing {figure.missing}",
            ),  # fmt: skip
        ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--publishes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=4.0, help="publishes per second")
    parser.add_argument("--dead", type=int, default=10, help="refusing subscribers (0: none)")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    options = Options(postgres=args.postgres)
    options.workdir.mkdir(parents=True, exist_ok=True)
    for figure in measure(options, args.subscribers, args.publishes, args.rate, args.dead):
        print(figure.line())


if __name__ == "__main__":
    main()
