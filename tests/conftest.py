"""Suite-wide rules.

Tests that need a piece of the machine (PostgreSQL, Debian's chromium, java for the HTML
checker) skip with the reason when it is missing, so `make test` still runs on a bare laptop.
With BANTIN_TEST_STRICT=1 (set by .ci/run) every such skip is a failure instead: CI must never
go green by not running a test.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

STRICT = os.environ.get("BANTIN_TEST_STRICT") == "1"


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
