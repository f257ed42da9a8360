"""`bantin up` as a real process tree, and the ways tests and benchmarks talk to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from shared.embedded_redis import free_port
from shared.settings import Settings

START_TIMEOUT = 60.0
T = TypeVar("T")
# Where `bantin up` writes every process's output, and its run state once ready (as
# services/cli/up.py's log_file and run_state_file say; tests/unit/cli checks they agree).
LOG_FILE = Path("log") / "bantin.log"
RUN_STATE_FILE = Path("run.json")


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
    log_path: Path  # every process's output (the log file of `bantin up`)
    terminal_path: Path  # what `bantin up` printed on its terminal
    log_offset: int = 0  # where this run's lines start in the (appended) log file

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
        """Everything every process of this run wrote (the terminal shows less)."""
        try:
            with self.log_path.open("rb") as file:
                file.seek(self.log_offset)
                return file.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def terminal(self) -> str:
        """What `bantin up` printed: its own lines, the ready block, problems."""
        return self.terminal_path.read_text(errors="replace")

    def run_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self.data_dir / RUN_STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return state

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


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except FileNotFoundError:
        return f"({path} does not exist)"


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """`check()`'s first truthy value, polled every 50 ms; fails naming `what` after
    `timeout` seconds (a bound on waiting, never a measure of speed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} never became healthy:\n{_log_tail(log_path)}")
        time.sleep(0.1)


def start_system(
    data_dir: Path,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
) -> System:
    """Start `bantin up` on free ports and wait until it says it is ready. `unset`: settings
    to leave to their defaults (e.g. BANTIN_PUBLIC_URL, derived from the gateway's port)."""
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
    for name in unset:
        env.pop(name, None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / LOG_FILE
    terminal_path = data_dir / "bantin-up.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"],
        env=env,
        stdout=terminal_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    system = System(
        process, data_dir, env,
        ingest_url=f"http://127.0.0.1:{ingest_port}",
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        log_path=log_path,
        terminal_path=terminal_path,
        log_offset=log_path.stat().st_size if log_path.exists() else 0,
    )  # fmt: skip
    try:
        wait_healthy(system.ingest_url + "/healthz", process, terminal_path)
        wait_healthy(system.gateway_url + "/healthz", process, terminal_path)
        wait_for_workers(system)
        wait_ready(system)
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


def wait_ready(system: System) -> None:
    """Until `bantin up` itself says it is ready (its run state names it): from then on it
    supervises, restarting what dies, instead of treating a death as a failed start."""
    deadline = time.monotonic() + START_TIMEOUT
    while (state := system.run_state()) is None or state.get("pid") != system.process.pid:
        if system.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`bantin up` never said it was ready:\n{system.terminal()}")
        time.sleep(0.05)


def stop_system(system: System) -> int:
    """Ctrl-C, as an operator would; returns the exit code."""
    if system.process.poll() is None:
        system.process.send_signal(signal.SIGINT)
    try:
        return system.process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(system.process.pid, signal.SIGKILL)
        raise


@dataclass
class MotoServer:
    """A real S3-compatible server (moto in server mode) on loopback, as a child process."""

    process: subprocess.Popen[bytes]
    endpoint: str  # http://127.0.0.1:PORT

    def storage_url(self, bucket: str, prefix: str = "site") -> str:
        """Create `bucket` (if new) and name a store in it, for BANTIN_STORAGE_URL."""
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}&region=us-east-1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_moto(port: int | None = None, host: str = "127.0.0.1") -> MotoServer:
    """Start `moto_server` on a free loopback port and wait until it answers. Clients need
    credentials of some kind: moto accepts any, and `moto_env()` supplies them."""
    port = port or free_port()
    server = Path(sys.executable).with_name("moto_server")
    argv = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen(
        [*argv, "--host", host, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    moto = MotoServer(process, f"http://{host}:{port}")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            httpx.get(moto.endpoint + "/moto-api/", timeout=1)
            return moto
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            moto.stop()
            raise RuntimeError(f"moto_server never answered on {moto.endpoint}")
        time.sleep(0.05)


def moto_env() -> dict[str, str]:
    """The AWS_* variables a client of the loopback moto server needs (any values do)."""
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
