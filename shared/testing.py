"""`bantin up` as a real process tree, and the ways tests and benchmarks talk to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from shared.embedded_redis import free_port
from shared.settings import Settings

START_TIMEOUT = 60.0


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class System:
    """A running `bantin up` and the ways to talk to it."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]
    ingest_url: str
    gateway_url: str
    log_path: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def create_agency(self, name: str, slug: str | None = None) -> str:
        slug = slug or f"co-quan-{uuid.uuid4().hex[:8]}"
        done = self.cli("agency", "create", name, "--slug", slug)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def redis(self) -> redis.Redis:
        url = (self.data_dir / "redis" / "url").read_text().strip()
        return redis.Redis.from_url(url)

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.ingest_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )

    def wait_published(
        self, client: httpx.Client, bulletin_id: int, timeout: float = 30
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            document: dict[str, Any] = client.get(f"/v1/bulletins/{bulletin_id}").json()
            if document["status"] == "published":
                return document
            assert time.monotonic() < deadline, f"not published in {timeout} s: {document}"
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def settings(self) -> Settings:
        """The system's own settings, for reading its database directly."""
        values = {k.removeprefix("BANTIN_").lower(): v for k, v in self.env.items()
                  if k.startswith("BANTIN_")}  # fmt: skip
        return Settings.model_validate(values)

    def processes(self, role: str) -> list[tuple[int, int]]:
        """(pid, parent pid) of live processes under `bantin up` whose command line has `role`
        (e.g. "worker render", "redis-server")."""
        found = []
        for pid in descendants(self.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if role in cmdline and alive(pid):
                found.append((pid, ppid))
        return found

    def arm_fault(self, point: str, action: str) -> Path:
        """Arm a kill point of shared/faults.py (the system must run with fault injection)."""
        armed = self.data_dir / "faults" / point
        armed.parent.mkdir(exist_ok=True)
        armed.write_text(action)
        return armed


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became healthy:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)


def start_system(
    data_dir: Path, database_url: str | None = None, extra_env: dict[str, str] | None = None
) -> System:
    gateway_port, ingest_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")} | {
        "BANTIN_DATA_DIR": str(data_dir),
        "BANTIN_GATEWAY_PORT": str(gateway_port),
        "BANTIN_INGEST_PORT": str(ingest_port),
        "BANTIN_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
        "BANTIN_REQUEUE_AFTER_SECONDS": "10",
        "BANTIN_RECONCILE_INTERVAL_SECONDS": "1",
        # Tests and benchmarks write faster than any agency may: they get limits of their
        # own; tests/integration/test_tenancy.py sets low ones to test them.
        "BANTIN_RATE_LIMIT": "5000/second",
        "BANTIN_BATCH_RATE_LIMIT": "50000/second",
    }
    if database_url:
        env["BANTIN_DATABASE_URL"] = database_url
    env |= extra_env or {}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "bantin-up.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    system = System(
        process, data_dir, env,
        ingest_url=f"http://127.0.0.1:{ingest_port}",
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        log_path=log_path,
    )  # fmt: skip
    try:
        wait_healthy(system.ingest_url + "/healthz", process, log_path)
        wait_healthy(system.gateway_url + "/healthz", process, log_path)
        wait_for_workers(system)
    except BaseException:
        stop_system(system)
        raise
    return system


def wait_for_workers(system: System) -> None:
    """Workers are up once the first home page, which `bantin up` requests, is served."""
    deadline = time.monotonic() + START_TIMEOUT
    while httpx.get(system.gateway_url + "/", timeout=1).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers never built the home page:\n{system.log()[-4000:]}")
        time.sleep(0.1)
    while httpx.get(system.gateway_url + "/feeds/all.rss", timeout=1).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers never built the feed:\n{system.log()[-4000:]}")
        time.sleep(0.1)


def stop_system(system: System) -> int:
    """Ctrl-C, as an operator would; returns the exit code."""
    if system.process.poll() is None:
        system.process.send_signal(signal.SIGINT)
    try:
        return system.process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(system.process.pid, signal.SIGKILL)
        raise
