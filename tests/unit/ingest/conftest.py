"""Fixtures of the in-process ingest tests: SQLite in a temp dir, Kombu's in-memory transport.

A module changes its settings by overriding `settings_overrides`, and its agency by
overriding `agency_slug`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from shared.settings import Settings
from tests.unit.ingest.helpers import auth_for, make_settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def settings(tmp_path: Path, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(tmp_path, **settings_overrides)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def agency_slug() -> str:
    return "so-noi-vu"


@pytest.fixture
def auth(settings: Settings, agency_slug: str) -> dict[str, str]:
    """Auth headers of the module's agency."""
    return auth_for(settings, agency_slug)
