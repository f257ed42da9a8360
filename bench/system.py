"""Start a real system for a scenario: `bantin up` with embedded Redis, on SQLite or a fresh
PostgreSQL database, stopped and cleaned up afterwards whatever happens."""

from __future__ import annotations

import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core import Options
from shared.testing import System, start_system, stop_system

POSTGRES_ADMIN_URL = os.environ.get("BANTIN_BENCH_POSTGRES_URL",
                                    "postgresql://postgres@127.0.0.1:5432/test")  # fmt: skip


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"bantin_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = re.sub(r"^postgresql(\+\w+)?://", "postgresql+psycopg://", POSTGRES_ADMIN_URL)
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_system(options: Options, name: str, extra_env: dict[str, str] | None = None
                   ) -> Iterator[System]:  # fmt: skip
    data_dir = (options.workdir / name).resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    with postgres_database() if options.postgres else _nothing() as database_url:
        system = start_system(data_dir, database_url, extra_env)
        try:
            yield system
        finally:
            stop_system(system)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def pause(system: System, role: str) -> list[int]:
    """SIGSTOP every process of a role (e.g. "worker render"): its queue just grows."""
    pids = [pid for pid, _ in system.processes(role)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
