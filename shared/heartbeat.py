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


# What a beat's fields must hold to be read; any other field is ignored (a newer release's
# beat, during a rolling upgrade).
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "role": str,
    "name": str,
    "pid": int,
    "host": str,
    "started_at": (int, float),
    "seen_at": (int, float),
    "metrics_url": (str, type(None)),
    "info": dict,
}


def parse(raw: bytes | str) -> Beat | None:
    """The Beat a stored value holds, or None when it cannot be read as one."""
    try:
        data = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(data, dict):
        return None
    known = {name: value for name, value in data.items() if name in _FIELD_TYPES}
    for name, value in known.items():
        if not isinstance(value, _FIELD_TYPES[name]) or isinstance(value, bool):
            return None
    try:
        return Beat(**known)
    except TypeError:  # a required field is missing
        return None


def read_all(redis: Redis) -> list[Beat]:
    """Every process that beat within HEARTBEAT_TTL, by role then name. A beat that cannot
    be read is skipped (and logged), never allowed to hide the others."""
    keys = sorted(redis.scan_iter(match=KEY_PREFIX + "*", count=500))
    beats = []
    for key, raw in zip(keys, redis.mget(keys) if keys else [], strict=True):
        if raw is None:  # expired between SCAN and MGET
            continue
        if (beat := parse(raw)) is None:
            log.warning("unreadable heartbeat skipped: %r", key)
            continue
        beats.append(beat)
    return sorted(beats, key=lambda b: (b.role, b.name))


class Heartbeat:
    """A daemon thread that sends `beat` every HEARTBEAT_INTERVAL; `info()` refreshes its
    info before each send. Redis being down, or `info()` failing, is logged once and retried,
    never raised."""

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
        # Nothing may end this thread but stop(): a dead heartbeat makes a healthy process
        # look gone. Each kind of failure is logged once per streak.
        info_failing = send_failing = False
        while not self._stop.is_set():
            if self.info is not None:
                try:
                    self.beat.info = self.info()
                    info_failing = False
                except Exception as exc:  # e.g. state changed by the work loop mid-copy
                    if not info_failing:
                        log.warning("heartbeat info failed; beating without it", exc_info=True)
                    info_failing = True
                    self.beat.info = {"info_error": f"{type(exc).__name__}: {exc}"[:200]}
            try:
                send(self.redis, self.beat)
                send_failing = False
            except Exception as exc:
                if not send_failing:
                    log.warning("heartbeat not sent (%s); retrying", exc)
                send_failing = True
            self._stop.wait(self.interval)
