"""Plain helpers shared by the in-process ingest tests (the fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from shared.agencies import create_agency
from shared.db import create_schema, session_scope
from shared.settings import Settings


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings on SQLite in `tmp_path`, with Kombu's in-memory transport unless overridden,
    and the schema created."""
    settings = Settings(**{"data_dir": tmp_path, "redis_url": "memory://", **overrides})
    create_schema(settings)
    return settings


def new_agency(settings: Settings, slug: str) -> tuple[int, str]:
    """(agency id, API key) of a fresh agency."""
    with session_scope(settings) as session:
        agency, key = create_agency(session, name=f"Sở {slug}", slug=slug)
        return agency.id, key


def new_key(settings: Settings, slug: str) -> str:
    """The API key of a fresh agency."""
    return new_agency(settings, slug)[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def auth_for(settings: Settings, slug: str) -> dict[str, str]:
    """Auth headers of a fresh agency."""
    return bearer(new_key(settings, slug))


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem answer with this status; its body, for further checks."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body
