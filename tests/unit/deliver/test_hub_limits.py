"""`POST /hub` refuses a new subscription beyond the caps with a 403 problem, never a renewal
(in-process ingest app on SQLite; the queued verifications are recorded instead of sent)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, make_settings, new_agency

PUBLIC = "https://bantin.example.gov.vn"
TOPIC = PUBLIC + "/feeds/agency/so-noi-vu.atom"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path, public_url=PUBLIC, hub_allow_private_callbacks=True,
                             hub_max_per_topic=3, hub_max_per_host=2)  # fmt: skip
    new_agency(settings, "so-noi-vu")
    return settings


@pytest.fixture
def client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        celery = test_client.app.state.celery  # type: ignore[attr-defined]
        monkeypatch.setattr(celery, "send_task", lambda *args, **kwargs: None)
        yield test_client


def subscribe(client: TestClient, callback: str, mode: str = "subscribe") -> Any:
    return client.post("/hub", data={"hub.mode": mode, "hub.topic": TOPIC,
                                     "hub.callback": callback})  # fmt: skip


def test_the_caps_refuse_new_subscriptions_with_a_403_and_never_renewals(
    client: TestClient,
) -> None:
    for callback in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"):
        assert subscribe(client, callback).status_code == 202
    body = assert_problem(subscribe(client, "http://127.0.0.1:9/c"), 403)
    assert "127.0.0.1" in body["detail"] and "(2)" in body["detail"]
    assert subscribe(client, "http://localhost:9/c").status_code == 202  # another host name
    body = assert_problem(subscribe(client, "http://[::1]:9/d"), 403)  # the feed has 3
    assert "(3)" in body["detail"]
    # Renewing (a request for an existing pair) and unsubscribing are never refused.
    assert subscribe(client, "http://127.0.0.1:9/a").status_code == 202
    assert subscribe(client, "http://127.0.0.1:9/b", "unsubscribe").status_code == 202
