"""`bantin up`: the whole system on one machine, as child processes with prefixed logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import click

from shared.embedded_redis import start_redis
from shared.settings import Settings, get_settings

STOP_GRACE_SECONDS = 10
RESTARTS_PER_MINUTE = 10  # beyond this, a child is restarted only every CRASH_LOOP_PAUSE
CRASH_LOOP_PAUSE = 5.0
DEMO_AGENCY = ("UBND tỉnh Bắc Kạn", "bac-kan")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = None


def _say(name: str, line: str) -> None:
    sys.stdout.write(f"{name:<10}| {line}\n")
    sys.stdout.flush()


def _pump(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        _say(name, raw.decode("utf-8", "replace").rstrip())


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


# uvicorn's httptools protocol plus a cap on the request head and read deadlines for head and
# body (BANTIN_MAX_HEADER_BYTES, BANTIN_*_TIMEOUT_SECONDS), which uvicorn itself lacks.
BOUNDED_HTTP = "services.bounded_http:BoundedHttpToolsProtocol"


def uvicorn_argv(factory: str, host: str, port: int) -> list[str]:
    """httptools (bounded) + uvloop, no proxy-header or Server-header work: the gateway's
    measured best (bench/gateway.py); harmless for ingest."""
    return _python(
        "uvicorn", "--factory", factory, "--host", host, "--port", str(port),
        "--http", BOUNDED_HTTP, "--loop", "uvloop", "--no-proxy-headers",
        "--no-server-header", "--no-access-log", "--log-level", "warning",
    )  # fmt: skip


def children(settings: Settings) -> list[Child]:
    # Workers and the reconciler serve /metrics on a free port each (listed by `bantin
    # status`); ingest and the gateway serve it on their own ports.
    metrics = {"BANTIN_METRICS_PORT": "0"}
    return [
        Child("ingest", uvicorn_argv("services.ingest.app:app_from_env",
                                     settings.ingest_host, settings.ingest_port)),
        Child("gateway", uvicorn_argv("services.gateway.app:app_from_env",
                                      settings.gateway_host, settings.gateway_port)),
        Child("render", _python("services.cli", "worker", "render"), metrics),
        Child("feed", _python("services.cli", "worker", "feed", "--concurrency", "1"), metrics),
        Child("reconciler", _python("services.cli", "reconciler"), metrics),
    ]  # fmt: skip


def prepare(settings: Settings) -> str | None:
    """Upgrade the schema; on first run create the demo agency and return its key."""
    from sqlalchemy import func, select

    from shared.agencies import create_agency
    from shared.db import session_scope
    from shared.migrations import upgrade
    from shared.models import Agency

    upgrade(settings)
    with session_scope(settings) as session:
        if session.scalar(select(func.count()).select_from(Agency)):
            return None
        _agency, key = create_agency(session, name=DEMO_AGENCY[0], slug=DEMO_AGENCY[1])
    key_file = settings.data_dir / "demo-agency.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = dict(os.environ)
        self.children: list[Child] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.stopping = threading.Event()

    def start_redis_if_needed(self) -> None:
        if self.settings.redis_url:
            return
        port = self.redis_port or None  # a restart keeps the port every child knows
        self.redis, url = start_redis(self.settings.data_dir.resolve() / "redis", port)
        self.redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.settings.embedded_redis_file.write_text(url + "\n")
        self.env["BANTIN_REDIS_URL"] = url
        _say("redis", f"embedded Redis at {url} (pid {self.redis.pid})")

    def spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env | child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C reaches only the supervisor, which then stops each child
            # in order instead of all of them dying at once mid-write.
            start_new_session=True,
        )
        assert child.process.stdout is not None
        threading.Thread(target=_pump, args=(child.name, child.process.stdout), daemon=True).start()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self.start_redis_if_needed()
            self.children = children(self.settings)
            for child in self.children:
                self.spawn(child)
            return self._watch()
        finally:
            self.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _watch(self) -> int:
        while not self.stopping.wait(0.5):
            if self.redis is not None and self.redis.poll() is not None:
                # Restarted empty, like any Redis without persistence: the reconciler re-sends
                # what was queued and rebuilds what its loss left stale.
                _say("bantin", f"embedded Redis exited with {self.redis.returncode}; restarting")
                self.start_redis_if_needed()
            for child in self.children:
                self._restart_if_exited(child)
        return 0

    def _restart_if_exited(self, child: Child) -> None:
        """Restart a child that died, at once, or after a pause if it keeps dying (a crash
        loop should not burn the CPU the rest of the system needs). Never give up: one
        failing part must not take the others down."""
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return
        now = time.monotonic()
        if child.restart_at is None:
            child.restarts = [t for t in child.restarts if now - t < 60]
            delay = 0.0 if len(child.restarts) < RESTARTS_PER_MINUTE else CRASH_LOOP_PAUSE
            child.restart_at = now + delay
            _say("bantin", f"{child.name} exited with code {code}; restarting it"
                 + (f" in {delay:.0f} s (it keeps exiting)" if delay else ""))  # fmt: skip
        if now >= child.restart_at:
            child.restarts.append(now)
            child.restart_at = None
            self.spawn(child)

    def stop(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for process in running:
            _signal_group(process, signal.SIGKILL)  # stray grandchildren (pool processes)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(STOP_GRACE_SECONDS)
            self.settings.embedded_redis_file.unlink(missing_ok=True)
        _say("bantin", "stopped")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def banner(settings: Settings, demo_key: str | None, data_dir: Path) -> None:
    lines = [
        f"Bantin is starting (data in {data_dir.resolve()})",
        f"  public site : {settings.public_url}/",
        f"  ingest API  : http://{settings.ingest_host}:{settings.ingest_port}/v1/bulletins"
        f"  (docs: http://{settings.ingest_host}:{settings.ingest_port}/docs)",
        f"  feeds       : {settings.public_url}/feeds/all.rss"
        f"  {settings.public_url}/feeds/all.atom",
    ]
    if demo_key:
        lines += [
            f"  demo agency : {DEMO_AGENCY[0]} ({DEMO_AGENCY[1]}); its API key, shown once and "
            f"saved in {data_dir / 'demo-agency.key'}:",
            f"  {demo_key}",
        ]
    for line in lines:
        _say("bantin", line)


@click.command()
def up() -> None:
    """Start everything: embedded Redis (unless BANTIN_REDIS_URL is set), database, ingest,
    gateway, render and feed workers, reconciler. Ctrl-C stops it all."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    demo_key = prepare(settings)
    banner(settings, demo_key, settings.data_dir)
    sys.exit(Supervisor(settings).run())


COMMANDS = [up]
