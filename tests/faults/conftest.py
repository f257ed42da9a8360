"""Fault-injection tests: real processes, really killed. Each test gets its own system."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testing import System, start_system, stop_system

# Short clocks so recovery is quick to observe; feeds long enough to hold every test bulletin,
# so "exactly once in each feed" can be checked for all of them.
FAULT_ENV = {
    "BANTIN_FAULT_INJECTION": "1",
    "BANTIN_REQUEUE_AFTER_SECONDS": "3",
    "BANTIN_RECONCILE_INTERVAL_SECONDS": "0.5",
    "BANTIN_VERIFY_INTERVAL_SECONDS": "2",
    "BANTIN_FEED_ITEMS": "250",
    "BANTIN_MAX_ATTEMPTS": "3",
}


@pytest.fixture
def system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[System]:
    """The system on the local site directory; a test parametrized with
    ``pytest.mark.parametrize("system", ["local", "s3"], indirect=True)`` also gets it with
    the site in an S3 bucket (a real moto server on loopback)."""
    env = dict(FAULT_ENV)
    if getattr(request, "param", "local") == "s3":
        env["BANTIN_STORAGE_URL"] = request.getfixturevalue("s3_storage_url")
    running = start_system(tmp_path / "data", extra_env=env)
    yield running
    stop_system(running)
