"""Fixtures giving integration tests the whole system, on SQLite and on PostgreSQL.

Each database backend gets its own system: embedded Redis (a private redis-server, never the
shared one on 6379), real uvicorn processes for ingest and gateway, real Celery workers.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from tests.system import System, start_system, stop_system

POSTGRES_ADMIN_URL = os.environ.get(
    "BANTIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test session, dropped afterwards."""
    import psycopg

    name = f"bantin_it_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = re.sub(r"^postgresql(\+\w+)?://", "postgresql+psycopg://", POSTGRES_ADMIN_URL)
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """The whole system, once on SQLite (the embedded default) and once on PostgreSQL."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_database")
    running = start_system(tmp_path_factory.mktemp(f"bantin-{request.param}"), database_url)
    yield running
    stop_system(running)
