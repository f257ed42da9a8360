from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import get_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data dir in BANTIN_DATA_DIR, no other BANTIN_* setting, and no cached settings."""
    import os

    for name in [n for n in os.environ if n.startswith("BANTIN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BANTIN_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()
