"""`bantin up`: the whole system on one machine, as child processes.

Every line of every child goes, prefixed with the child's name, to the log file in the data
dir (`log/bantin.log`); the terminal shows the supervisor's own lines, the "ready" block and
problems (children's warnings, errors and tracebacks, restarts). `--verbose` streams every
child line to the terminal as well. Once ready, `run.json` in the data dir tells `bantin
publish` and `bantin status` where the running instance is; it is removed on stop.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click

from shared.embedded_redis import start_redis
from shared.settings import Settings, get_settings, local_url

STOP_GRACE_SECONDS = 10
RESTARTS_PER_MINUTE = 10  # beyond this, a child is restarted only every CRASH_LOOP_PAUSE
CRASH_LOOP_PAUSE = 5.0
READY_TIMEOUT = 90.0  # a slow first start (a cold disk, two busy cores) takes ~15 s
LOG_ROTATE_BYTES = 50 * 1024 * 1024  # at start, a larger log is moved to bantin.log.1
TAIL_LINES = 25  # of a child's output, shown when it dies during start-up
DEMO_AGENCY = ("UBND tỉnh Bắc Kạn", "bac-kan")
DEMO_EDITOR = "bientap@bac-kan.example"  # the demo agency's console user (.example: no mail)
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"


def log_file(data_dir: Path) -> Path:
    """Where `bantin up` writes every process's output (shared/testing.py reads it)."""
    return data_dir.resolve() / "log" / "bantin.log"


def run_state_file(data_dir: Path) -> Path:
    """Written once the system is ready, removed when it stops."""
    return data_dir.resolve() / "run.json"


def read_run_state(data_dir: Path) -> dict[str, Any] | None:
    """The run state of a `bantin up` still running on this data dir, else None (no file, a
    garbled one, or one left by a supervisor killed with SIGKILL)."""
    try:
        state = json.loads(run_state_file(data_dir).read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict) or not _pid_alive(pid):
        return None
    return state


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the supervisor's
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


# A child's line that starts a log record, and its level: our text format ("2024-05-01
# 10:00:00,123 WARNING render ..."), Celery's ("[2024-05-01 10:00:00,123: ERROR/MainProcess]"),
# uvicorn's ("ERROR:    ...") and Python's warnings ("file.py:12: DeprecationWarning: ...").
_RECORD = re.compile(
    r"^(?:\d{4}-\d\d-\d\d[ T][\d:.,]+\s+(?P<ours>[A-Z]+)\b"
    r"|\[\d{4}-\d\d-\d\d [\d:.,]+: (?P<celery>[A-Z]+)/"
    r"|(?P<uvicorn>[A-Z]+):\s"
    r"|\S+:\d+: (?P<warning>\w*Warning): )"
)
_PROBLEM_LEVELS = {"WARNING", "ERROR", "CRITICAL", "FATAL"}
# Celery's start-up banner ("-------------- render.12@host v5", "[tasks]"): ends a record.
_BANNER = re.compile(r"^\s*(-[-* ]|\[(tasks|queues|config)\])")
# Known and harmless: Celery's warning, on every start as root (containers, CI), that it
# runs as root. It stays in the log file.
_KNOWN_NOISE = ("SecurityWarning: You're running the worker with superuser privileges",)


class ProblemFilter:
    """Tells which of a child's lines the terminal should show: records at WARNING or above,
    with the lines that continue them (a traceback), and any traceback at all."""

    def __init__(self) -> None:
        self.showing = False

    def __call__(self, line: str) -> bool:
        if line.startswith("Traceback (most recent call last)"):
            self.showing = True
        elif _BANNER.match(line) or any(noise in line for noise in _KNOWN_NOISE):
            self.showing = False
        elif line.startswith("{"):
            self.showing = self._json_level(line) in _PROBLEM_LEVELS
        elif match := _RECORD.match(line):
            level = next(group for group in match.groups() if group)
            self.showing = level in _PROBLEM_LEVELS or level.endswith("Warning")
        return self.showing  # any other line continues the record before it

    @staticmethod
    def _json_level(line: str) -> str:
        try:
            record = json.loads(line)
        except ValueError:
            return ""
        return str(record.get("level", "")).upper() if isinstance(record, dict) else ""


class Output:
    """Every line to the log file; to the terminal, the supervisor's own lines and, from the
    children, problems only (everything with `verbose`)."""

    def __init__(self, path: Path, verbose: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        self.path = path
        self.verbose = verbose
        # Owner-only, like the key file: the log holds every process's output.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(descriptor, 0o600)  # a log made by an older version was 0644
        self.file = open(descriptor, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.lock = threading.Lock()
        self.file.write(f"---- bantin up started {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")

    def say(self, line: str, name: str = "bantin") -> None:
        """A supervisor line: terminal and log."""
        self._write(f"{name:<10}| {line}", terminal=True)

    def block(self, lines: list[str], secrets: dict[str, str] | None = None) -> None:
        """Unprefixed lines (the ready block), easy to read and to copy from. `secrets` (the
        demo key, the sign-in link) reach the terminal only; the log gets what each maps to."""
        text = "\n".join(lines)
        logged = text
        for secret, shown in (secrets or {}).items():
            logged = logged.replace(secret, shown)
        with self.lock:
            self.file.write(logged + "\n")
            self.file.flush()
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def child(self, child: Child, line: str, problem: bool) -> None:
        child.tail.append(line)
        self._write(f"{child.name:<10}| {line}", terminal=self.verbose or problem)

    def _write(self, text: str, terminal: bool) -> None:
        with self.lock:
            self.file.write(text + "\n")
            self.file.flush()
            if terminal:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()

    def close(self) -> None:
        with self.lock:
            self.file.close()


# Children get SIGTERM if the supervisor dies without stopping them (SIGKILL, the OOM
# killer): Linux's parent-death signal, set by util-linux's setpriv before it execs the child,
# so no orphan keeps the ports and the next `bantin up` starts clean. Without setpriv (not
# Linux), orphans are possible, as before.
DIE_WITH_SUPERVISOR: tuple[str, ...] = (
    ("setpriv", "--pdeathsig", "TERM", "--") if shutil.which("setpriv") else ()
)


def mask(key: str) -> str:
    """A key as listings show it: enough to tell keys apart, never enough to use one."""
    return key[:16] + "…"


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
        # WebSub deliveries: a thread pool (see `bantin worker deliver`).
        Child("deliver", _python("services.cli", "worker", "deliver"), metrics),
        Child("reconciler", _python("services.cli", "reconciler"), metrics),
    ]  # fmt: skip


def bind_problem(host: str, port: int, port_setting: str, host_setting: str) -> str | None:
    """Why a server could not listen on host:port, naming the setting to change; None if it
    can. Binds as uvicorn does (SO_REUSEADDR, so a port in TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror as exc:
        return f"{host_setting}={host} is not a known host name ({exc.strerror})"
    except OverflowError:
        return f"{port_setting}={port} is not a port number (0-65535)"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"port {port} on {host} is already in use (by another program, or another "
                f"`bantin up`): stop it, or set {port_setting} to a free port"
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"{host_setting}={host} is not an address of this machine"
        if exc.errno == errno.EACCES:
            return f"port {port} needs privileges: set {port_setting} to a port above 1023"
        return f"cannot listen on {host}:{port} ({exc.strerror}): check {port_setting}"
    return None


def port_problems(settings: Settings) -> list[str]:
    """Everything that would keep ingest or the gateway from listening, found before anything
    starts (a server that cannot bind would otherwise be restarted forever)."""
    if settings.gateway_port == settings.ingest_port:
        return [
            f"BANTIN_GATEWAY_PORT and BANTIN_INGEST_PORT are both {settings.ingest_port}: "
            "give them different ports"
        ]
    found = [
        bind_problem(settings.gateway_host, settings.gateway_port,
                     "BANTIN_GATEWAY_PORT", "BANTIN_GATEWAY_HOST"),
        bind_problem(settings.ingest_host, settings.ingest_port,
                     "BANTIN_INGEST_PORT", "BANTIN_INGEST_HOST"),
    ]  # fmt: skip
    return [problem for problem in found if problem]


def storage_problems(settings: Settings) -> list[str]:
    """A BANTIN_STORAGE_URL that is malformed or names a bucket that does not answer: said
    once, here, rather than by every worker and the gateway failing on their own."""
    if not settings.storage_url:
        return []
    from shared.storage import S3Storage, StorageURLError

    try:
        store = S3Storage.from_url(settings.storage_url)
    except StorageURLError as exc:
        return [str(exc)]
    if not store.reachable():
        where = store.location.endpoint or "AWS"
        return [
            f"the bucket {store.location.bucket!r} at {where} does not answer "
            "(BANTIN_STORAGE_URL; check it exists and the AWS_* credentials)"
        ]
    return []


@dataclass(frozen=True)
class Demo:
    """What a first run made, shown once: the demo agency's API key and its editor's
    one-time console sign-in link (both secrets: the log file gets them masked)."""

    key: str
    console_link: str

    def masked(self) -> dict[str, str]:
        """Each secret → what the log file shows of it: the key's display prefix, the link
        without its token."""
        return {
            self.key: mask(self.key),
            self.console_link: self.console_link.rsplit("/", 1)[0] + "/…",
        }


def prepare(settings: Settings, output: Output | None = None) -> Demo | None:
    """Upgrade the schema; on first run create the demo agency and its console user."""
    from sqlalchemy import func, select

    from shared.agencies import create_agency
    from shared.db import session_scope
    from shared.migrations import upgrade
    from shared.models import Agency
    from shared.users import invite, invite_link

    done = upgrade(settings)
    if output is not None and done.changed and (done.before or done.adopted):
        # An upgrade is news to an operator (a new release); creating a fresh one is not.
        output.say(f"database schema upgraded from {done.before or done.adopted} to {done.after}")
    with session_scope(settings) as session:
        if session.scalar(select(func.count()).select_from(Agency)):
            return None
        _agency, key = create_agency(session, name=DEMO_AGENCY[0], slug=DEMO_AGENCY[1])
        session.flush()
        token = invite(session, DEMO_EDITOR, DEMO_AGENCY[1], hours=settings.console_invite_hours)
    key_file = settings.data_dir / "demo-agency.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return Demo(key, invite_link(settings.resolved_ingest_url, token))


class StartupFailed(Exception):
    """A child died, or Redis would not start, before the system was ready."""


@dataclass
class Check:
    part: str  # what is not ready while this fails, for the operator
    url: str
    error: str = "not tried yet"


class Supervisor:
    def __init__(self, settings: Settings, output: Output, demo: Demo | None = None) -> None:
        self.settings = settings
        self.output = output
        self.demo = demo
        self.env = dict(os.environ)
        self.children: list[Child] = []
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0
        self.stopping = threading.Event()
        self.ingest_url = local_url(settings.ingest_host, settings.ingest_port)
        self.gateway_url = local_url(settings.gateway_host, settings.gateway_port)
        self.ready = False
        self.wrote_run_state = False
        self._pending: list[Check] = []  # health checks still failing after READY_TIMEOUT

    def start_redis_if_needed(self) -> None:
        if self.settings.redis_url:
            return
        port = self.redis_port or None  # a restart keeps the port every child knows
        try:
            self.redis, url = start_redis(
                self.settings.data_dir.resolve() / "redis", port, wrapper=DIE_WITH_SUPERVISOR
            )
        except (RuntimeError, OSError) as exc:
            raise StartupFailed(
                f"the embedded Redis would not start ({exc}); its log: "
                f"{self.settings.data_dir.resolve() / 'redis' / 'redis.log'}"
            ) from None
        self.redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.settings.embedded_redis_file.write_text(url + "\n")
        self.env["BANTIN_REDIS_URL"] = url
        self.output.say(f"embedded Redis at {url} (pid {self.redis.pid})", "redis")

    def spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            [*DIE_WITH_SUPERVISOR, *child.argv],
            env=self.env | child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C reaches only the supervisor, which then stops each child
            # in order instead of all of them dying at once mid-write.
            start_new_session=True,
        )
        assert child.process.stdout is not None
        threading.Thread(target=self._pump, args=(child, child.process.stdout), daemon=True).start()

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        problem = ProblemFilter()
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.output.child(child, line, problem(line))

    def run(self) -> int:
        # A closed terminal (SIGHUP) stops everything as Ctrl-C does, not just the supervisor.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            self.start_redis_if_needed()
            self.children = children(self.settings)
            for child in self.children:
                self.spawn(child)
            self._start_up()
            return self._watch()
        except StartupFailed as exc:
            self.output.say(f"start-up failed: {exc}")
            return 1
        finally:
            self.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _start_up(self) -> None:
        """Wait for the health checks; a child dying meanwhile ends `up` with its last lines
        (restarting it would only repeat the failure). Past READY_TIMEOUT, say what is not
        ready and go on supervising: a slow machine may still get there."""
        checks = [
            Check("ingest (its /healthz)", self.ingest_url + "/healthz"),
            Check("gateway (its /healthz)", self.gateway_url + "/healthz"),
            Check("workers (the home page, built by the reconciler and render worker)",
                  self.gateway_url + "/"),
            Check("workers (the feed, built by the feed worker)",
                  self.gateway_url + "/feeds/all.rss"),
        ]  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while checks and not self.stopping.is_set():
            for child in self.children:
                assert child.process is not None
                if (code := child.process.poll()) is not None:
                    time.sleep(0.2)  # let its pump thread read its last lines
                    tail = "\n".join(f"    {line}" for line in child.tail)
                    raise StartupFailed(
                        f"{child.name} exited with code {code} before the system was ready; "
                        f"its last lines:\n{tail}\n  full log: {self.output.path}"
                    )
            if self._passes(checks[0]):
                checks.pop(0)
                continue
            if time.monotonic() > deadline:
                self.output.say(
                    f"not ready after {READY_TIMEOUT:.0f} s: {checks[0].part} does not answer "
                    f"at {checks[0].url} ({checks[0].error}); see {self.output.path}. Still "
                    "supervising: the ready lines follow if it gets there."
                )
                self._pending = checks
                return
            self.stopping.wait(0.2)
        self._pending = checks
        if not checks:
            self._become_ready()

    def _passes(self, check: Check) -> bool:
        import httpx

        try:
            status = httpx.get(check.url, timeout=2).status_code
        except httpx.HTTPError as exc:
            check.error = type(exc).__name__
            return False
        check.error = f"HTTP {status}"
        return status == 200

    def _become_ready(self) -> None:
        self.ready = True
        self._write_run_state()
        secrets = self.demo.masked() if self.demo else None
        self.output.block(ready_block(self.settings, self.demo, self.output.path), secrets)

    def _write_run_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "data_dir": str(self.settings.data_dir.resolve()),
            "ingest_url": self.ingest_url,
            "gateway_url": self.gateway_url,
            "public_url": self.settings.public_url,
            "log": str(self.output.path),
        }
        path = run_state_file(self.settings.data_dir)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(path)  # readers never see half a file
        self.wrote_run_state = True

    def _watch(self) -> int:
        while not self.stopping.wait(0.5):
            if self.redis is not None and self.redis.poll() is not None:
                # Restarted empty, like any Redis without persistence: the reconciler re-sends
                # what was queued and rebuilds what its loss left stale.
                self.output.say(f"embedded Redis exited with {self.redis.returncode}; restarting")
                try:
                    self.start_redis_if_needed()
                except StartupFailed as exc:
                    self.output.say(f"{exc}; trying again")
            for child in self.children:
                self._restart_if_exited(child)
            if self._pending and self._passes(self._pending[0]):
                self._pending.pop(0)
                if not self._pending:
                    self._become_ready()
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
            pause = f" in {delay:.0f} s (it keeps exiting)" if delay else ""
            self.output.say(f"{child.name} exited with code {code}; restarting it{pause}")
        if now >= child.restart_at:
            child.restarts.append(now)
            child.restart_at = None
            self.spawn(child)

    def stop(self) -> None:
        if self.wrote_run_state:
            run_state_file(self.settings.data_dir).unlink(missing_ok=True)
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        if running:
            self.output.say("stopping")
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
        self.output.say("stopped")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else absolute."""
    path = path.absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def bantin_command() -> str:
    """How the person who ran `up` runs `bantin`: as typed (`.venv/bin/bantin` under `make
    run`), plain `bantin` when that is what the PATH finds, else the venv's script."""
    invoked = Path(sys.argv[0])
    script = invoked if invoked.name == "bantin" else Path(sys.executable).parent / "bantin"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m services.cli"
    on_path = shutil.which("bantin")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "bantin"
    return shlex.quote(_shown_path(script))


def ready_block(settings: Settings, demo: Demo | None, log_path: Path) -> list[str]:
    data_dir = settings.data_dir.resolve()
    key_file = data_dir / "demo-agency.key"
    ingest = settings.resolved_ingest_url
    lines = [
        "",
        f"Bantin is ready (data in {_shown_path(data_dir)})",
        f"  site        {settings.public_url}/",
        f"  feeds       {settings.public_url}/feeds/all.rss  .atom  .json",
        f"  API         {ingest}/v1/bulletins   docs: {ingest}/docs",
        f"  console     {ingest}/console/   (agency staff write bulletins in the browser)",
    ]
    if demo:
        lines += [
            f"  demo agency {DEMO_AGENCY[0]} ({DEMO_AGENCY[1]}); its API key, shown this once:",
            f"              {demo.key}",
            f"              saved in {_shown_path(key_file)}",
            f"  demo editor {DEMO_EDITOR}: open this link once to set a password",
            f"              {demo.console_link}",
        ]
    elif key_file.exists():
        lines.append(f"  demo key    in {_shown_path(key_file)}")
    # Another shell finds this instance through the data dir: name it unless it is the default.
    bantin = bantin_command()
    if data_dir != Path("var").resolve():
        bantin = f"BANTIN_DATA_DIR={shlex.quote(_shown_path(data_dir))} {bantin}"
    if key_file.exists():
        sample = _shown_path(SAMPLE) if SAMPLE.exists() else "<bulletin.txt>"
        key = shlex.quote(_shown_path(key_file))
        lines += [
            "  publish the sample bulletin from another terminal:",
            f'    {bantin} publish {shlex.quote(sample)} --key "$(cat {key})"',
        ]
    lines.append(f"  new editor  {bantin} user invite EMAIL --agency SLUG  (prints a sign-in link)")
    lines += [
        f"  log         {_shown_path(log_path)}  (`bantin up --verbose` shows it all here)",
        f"  status      {bantin} status",
        "Ctrl-C stops everything.",
        "",
    ]
    return lines


@click.command()
@click.option(
    "--verbose", "-v", is_flag=True, help="Show every process's output here, not only problems."
)
def up(verbose: bool) -> None:
    """Start everything: embedded Redis (unless BANTIN_REDIS_URL is set), database, ingest,
    gateway, render and feed workers, reconciler. Ctrl-C stops it all.

    Exits 1 at once when a port is taken or a part dies before the system is ready."""
    settings = get_settings()
    running = read_run_state(settings.data_dir)
    if running:
        raise click.ClickException(
            f"a `bantin up` (pid {running['pid']}) already runs on data dir "
            f"{settings.data_dir.resolve()}: stop it first, or set BANTIN_DATA_DIR"
        )
    problems = port_problems(settings) + storage_problems(settings)
    if problems:
        raise click.ClickException("cannot start:\n  " + "\n  ".join(problems))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    output = Output(log_file(settings.data_dir), verbose)
    output.say(
        f"starting (data in {_shown_path(settings.data_dir.resolve())}; "
        f"log in {_shown_path(output.path)})"
    )
    try:
        demo = prepare(settings, output)
    except Exception as exc:  # a database that cannot be reached or upgraded: no traceback
        output.close()
        raise click.ClickException(
            f"cannot prepare the database {_database_shown(settings)}: {exc}"
        ) from None
    code = Supervisor(settings, output, demo).run()
    output.close()
    sys.exit(code)


def _database_shown(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


COMMANDS = [up]
