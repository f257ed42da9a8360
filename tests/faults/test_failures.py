"""Bulletins that cannot be rendered: they fail visibly after a bounded number of attempts,
whether they raise or kill their worker, and `bantin retry-failed` brings them back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared import faults
from shared.testing import System
from tests.faults.checks import report, wait_for
from tests.faults.conftest import disarm_faults


@pytest.fixture
def system(module_system: System) -> Iterator[System]:
    """Both cases share one system (tests/faults/conftest.py's `module_system`): each has its
    own agency, each ends with its bulletin published (none left failed for the other's
    `retry-failed` to count), and the fault is disarmed after each."""
    yield module_system
    disarm_faults(module_system)


@pytest.mark.parametrize(
    ("action", "reason"),
    [("error", "InjectedFault: injected fault"), ("poison", "the worker died while rendering")],
)
def test_a_failing_bulletin_fails_with_its_reason_then_retry_failed_publishes_it(
    system: System, action: str, reason: str
) -> None:
    key = system.create_agency("Sở Lao động", f"so-lao-dong-{action}")
    armed = system.arm_fault(faults.RENDER_BEFORE_WRITE, action)
    with system.api(key) as api:
        bulletin = api.post("/v1/bulletins", json={"title": "Không thể dựng", "body": "x"}).json()
        status_url = f"/v1/bulletins/{bulletin['id']}"
        wait_for(lambda: api.get(status_url).json()["status"] == "failed", 90, "status failed")
        failed = api.get(status_url).json()
        assert reason in failed["last_error"]
        assert failed["attempts"] == 3  # BANTIN_MAX_ATTEMPTS
        assert failed["rendered_revision"] == 0

        armed.unlink()  # the cause is fixed; the operator re-queues
        done = system.cli("retry-failed")
        assert done.returncode == 0 and "re-queued 1" in done.stdout, done.stderr
        published = system.wait_published(api, bulletin["id"])
    assert published["last_error"] is None
    report(f"failure ({action})", attempts_before_failed=failed["attempts"])
