"""Fixtures giving integration tests the whole system, on SQLite and on PostgreSQL.

Each database backend gets its own system: embedded Redis (a private redis-server, never the
shared one on 6379), real uvicorn processes for ingest and gateway, real Celery workers. The
pipeline tests (test_pipeline.py) also run on a third: SQLite with the site in an S3 bucket
(a real moto server on loopback), which every worker, the reconciler and the gateway use.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shared.testing import MotoServer, System, start_system, stop_system

BACKENDS = ["sqlite", "postgresql"]
# The object-store variant costs a third system start: only the pipeline's tests pay it, by
# parametrizing `system` with these (test_pipeline.py's pytestmark).
PIPELINE_BACKENDS = [*BACKENDS, "sqlite-s3"]


@pytest.fixture(scope="session", params=BACKENDS)
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """The whole system: on SQLite (the embedded default), on PostgreSQL, or on SQLite with
    the site in a bucket."""
    kind: str = request.param
    database_url = None
    # The hub tests' subscribers listen on loopback (test_hub.py shares these systems).
    extra_env = {"BANTIN_HUB_ALLOW_PRIVATE_CALLBACKS": "true"}
    if kind == "postgresql":
        database_url = request.getfixturevalue("postgres_database")
    if kind == "sqlite-s3":
        moto: MotoServer = request.getfixturevalue("moto_server")
        bucket = f"bantin-it-{uuid.uuid4().hex[:10]}"
        extra_env["BANTIN_STORAGE_URL"] = moto.storage_url(bucket, "site")
    running = start_system(tmp_path_factory.mktemp(f"bantin-{kind}"), database_url, extra_env)
    yield running
    stop_system(running)
