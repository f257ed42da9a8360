"""Fault-injection tests: real processes, really killed. Each test gets its own system, but
for the modules whose tests cannot disturb each other (each its own agency, every armed fault
disarmed after each test): those share one per module (`module_system`), as a start costs
10-25 s on a busy 2-core machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
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


def disarm_faults(system: System) -> None:
    """Remove every armed kill point, so a test that failed before disarming its own cannot
    break the next test on a shared system."""
    for armed in (system.data_dir / "faults").glob("*"):
        with suppress(FileNotFoundError):
            armed.unlink()


@pytest.fixture(scope="module")
def module_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One system (local site directory, FAULT_ENV) for all the tests of a module; a module
    using it overrides `system` with it and disarms the faults after each test."""
    running = start_system(tmp_path_factory.mktemp("faults") / "data", extra_env=FAULT_ENV)
    yield running
    stop_system(running)
