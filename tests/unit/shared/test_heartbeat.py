"""Heartbeats against a real (private) Redis: the thread survives any failure, and reading
skips what it cannot parse."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest
from redis import Redis

from shared.heartbeat import KEY_PREFIX, Heartbeat, new_beat, parse, read_all


@pytest.fixture
def redis(private_redis: str) -> Iterator[Redis]:
    client = Redis.from_url(private_redis)
    client.flushdb()
    yield client
    client.close()


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def stored_info(redis: Redis, key: str) -> dict[str, Any] | None:
    raw = redis.get(key)
    return None if raw is None else dict(json.loads(raw)["info"])


def test_a_failing_info_does_not_stop_the_beats(redis: Redis) -> None:
    calls = {"n": 0}
    healthy = threading.Event()

    def info() -> dict[str, Any]:
        calls["n"] += 1
        if not healthy.is_set():
            raise RuntimeError("dictionary changed size during iteration")
        return {"passes": calls["n"]}

    beat = new_beat("reconciler")
    heartbeat = Heartbeat(redis, beat, info, interval=0.02).start()
    try:
        assert wait_for(lambda: calls["n"] >= 3)  # kept calling after the first failure
        assert stored_info(redis, beat.key) == {
            "info_error": "RuntimeError: dictionary changed size during iteration"
        }
        assert heartbeat._thread.is_alive()
        healthy.set()
        assert wait_for(lambda: "passes" in (stored_info(redis, beat.key) or {}))
    finally:
        heartbeat.stop()
    assert redis.get(beat.key) is None  # a clean stop leaves no beat


def test_a_send_failing_with_any_error_does_not_stop_the_beats(redis: Redis) -> None:
    calls = {"n": 0}

    def info() -> dict[str, Any]:
        calls["n"] += 1
        # Not JSON-serialisable on the first beats: send() raises TypeError, not RedisError.
        return {"when": object()} if calls["n"] < 3 else {"ok": True}

    beat = new_beat("render")
    heartbeat = Heartbeat(redis, beat, info, interval=0.02).start()
    try:
        assert wait_for(lambda: stored_info(redis, beat.key) == {"ok": True})
    finally:
        heartbeat.stop()


def test_reading_ignores_unknown_fields_and_skips_unreadable_beats(redis: Redis) -> None:
    good = new_beat("ingest", "http://web1:9100/metrics")
    good.seen_at = time.time()
    newer = asdict(new_beat("gateway")) | {"seen_at": time.time(), "zone": "b", "load": [1, 2]}
    redis.set(good.key, json.dumps(asdict(good)))
    redis.set(KEY_PREFIX + newer["name"], json.dumps(newer))  # a newer release's beat
    redis.set(KEY_PREFIX + "garbled", b"{not json")
    redis.set(KEY_PREFIX + "list", "[1, 2]")
    redis.set(KEY_PREFIX + "no-pid", json.dumps({k: v for k, v in newer.items() if k != "pid"}))
    redis.set(KEY_PREFIX + "bad-type", json.dumps(newer | {"seen_at": "yesterday"}))

    beats = read_all(redis)
    assert [(b.role, b.name) for b in beats] == [("gateway", newer["name"]), ("ingest", good.name)]
    assert beats[1] == good
    assert beats[0].pid == newer["pid"] and not hasattr(beats[0], "zone")


def test_parse_refuses_what_is_not_a_beat() -> None:
    assert parse(b"\xff\xfe") is None
    assert parse("null") is None
    assert parse(json.dumps(asdict(new_beat("feed")) | {"pid": True})) is None
    assert parse(json.dumps(asdict(new_beat("feed")))) is not None
