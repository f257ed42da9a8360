"""A mistyped BANTIN_* value is one clear error naming the setting, from every command."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from shared.settings import get_settings


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("BANTIN_GATEWAY_PORT", "tám nghìn", "gateway_port"),
        ("BANTIN_OPERATOR_TOKEN", "admin", "at least 32 characters"),
        ("BANTIN_LOG_FORMAT", "xml", "log_format"),
    ],
)
@pytest.mark.parametrize("command", [["up"], ["agency", "list"], ["db", "current"]])
def test_a_bad_setting_is_one_error_not_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv("BANTIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(main, command)
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 1, done.output
    assert done.output.startswith("Error: invalid settings:") and named in done.output
    assert not isinstance(done.exception, Exception) or isinstance(done.exception, SystemExit)
    assert not (tmp_path / "bantin.db").exists()  # nothing started, nothing created
