"""Fixtures giving integration tests the whole system, on SQLite and on PostgreSQL.

Each database backend gets its own system: embedded Redis (a private redis-server, never the
shared one on 6379), real uvicorn processes for ingest and gateway, real Celery workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.testing import System, start_system, stop_system


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
