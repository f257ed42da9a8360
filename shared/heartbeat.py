"""Heartbeats: every long-running process says it is alive, in Redis, every few seconds.

`bantin status` reads them to list what runs (and the metrics URL of each), so "alive"
means "beat within the last HEARTBEAT_TTL seconds", never a guess from a process table. A
beat is one SET with an expiry: a process that dies simply stops renewing its key.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "bantin:heartbeat:"
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10  # seconds without a beat before a process counts as gone


@dataclass
class Beat:
    role: str  # ingest, gateway, render, feed, reconciler
    name: str  # unique per process: "<role>.<pid>@<host>"
    pid: int
    host: str
    started_at: float  # Unix time
    seen_at: float = 0.0  # Unix time of this beat
    metrics_url: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # role-specific, e.g. the last pass

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name


def new_beat(role: str, metrics_url: str | None = None) -> Beat:
    host, pid = socket.gethostname(), os.getpid()
    return Beat(role, f"{role}.{pid}@{host}", pid, host, time.time(), metrics_url=metrics_url)


def send(redis: Redis, beat: Beat) -> None:
    beat.seen_at = time.time()
    redis.set(beat.key, json.dumps(asdict(beat), ensure_ascii=False), ex=HEARTBEAT_TTL)


def read_all(redis: Redis) -> list[Beat]:
    """Every process that beat within HEARTBEAT_TTL, by role then name."""
    keys = sorted(redis.scan_iter(match=KEY_PREFIX + "*", count=500))
    beats = []
    for raw in redis.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        beats.append(Beat(**json.loads(raw)))
    return sorted(beats, key=lambda b: (b.role, b.name))


class Heartbeat:
    """A daemon thread that sends `beat` every HEARTBEAT_INTERVAL; `info()` refreshes its
    info before each send. Redis being down is logged once and retried, never raised."""

    def __init__(
        self,
        redis: Redis,
        beat: Beat,
        info: Callable[[], dict[str, Any]] | None = None,
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.redis, self.beat, self.info, self.interval = redis, beat, info, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        # A beat being sent right now would otherwise land after the delete below and leave
        # a ghost for HEARTBEAT_TTL seconds.
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self.redis.delete(self.beat.key)  # a clean stop is not a crash: leave no ghost
        except RedisError:
            pass

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                if self.info is not None:
                    self.beat.info = self.info()
                send(self.redis, self.beat)
                failing = False
            except RedisError as exc:
                if not failing:
                    log.warning("heartbeat not sent (%s); retrying", exc)
                failing = True
            self._stop.wait(self.interval)
