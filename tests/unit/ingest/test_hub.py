"""`POST /hub`: the form the WebSub spec defines, refused at once when bad, 202 when good."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from services.deliver.subscriptions import DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS
from shared.celery_app import VERIFY_INTENT
from shared.db import session_scope
from shared.models import Category, Subscription, SubscriptionState
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, new_agency

PUBLIC = "https://bantin.example.gov.vn"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CALLBACK = "http://127.0.0.1:9/push"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"public_url": PUBLIC, "hub_allow_private_callbacks": True}


@pytest.fixture
def sent(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """The tasks the hub queues, instead of queueing them."""
    calls: list[tuple[str, list[Any]]] = []
    celery = client.app.state.celery  # type: ignore[attr-defined]
    monkeypatch.setattr(celery, "send_task", lambda name, args: calls.append((name, args)))
    return calls


@pytest.fixture
def topic(settings: Settings) -> str:
    new_agency(settings, "so-noi-vu")
    return PUBLIC + "/feeds/agency/so-noi-vu.atom"


def form(**fields: str) -> dict[str, str]:
    return {f"hub.{name}": value for name, value in fields.items()}


def subscriptions(settings: Settings) -> list[tuple[str, str, str | None, int | None, str | None]]:
    with session_scope(settings) as session:
        return [
            (row.topic, row.state, row.pending_mode, row.pending_lease, row.pending_secret)
            for row in session.query(Subscription).order_by(Subscription.id)
        ]


def test_a_subscription_is_accepted_recorded_pending_and_its_verification_queued(
    client: TestClient, settings: Settings, topic: str, sent: list[tuple[str, list[Any]]]
) -> None:
    fields = form(mode="subscribe", topic=topic, callback=CALLBACK, lease_seconds="3600",
                  secret="bí mật")  # fmt: skip
    response = client.post("/hub", data=fields)
    assert response.status_code == 202, response.text
    assert subscriptions(settings) == [(topic, SubscriptionState.PENDING, "subscribe", 3600,
                                        "bí mật")]  # fmt: skip
    assert len(sent) == 1 and sent[0][0] == VERIFY_INTENT
    subscription_id, token = sent[0][1]
    with session_scope(settings) as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None and row.token == token


@pytest.mark.parametrize(
    ("lease", "granted"), [(None, DEFAULT_LEASE_SECONDS), ("999999999", MAX_LEASE_SECONDS)]
)
def test_leases_default_and_are_capped(
    client: TestClient, settings: Settings, topic: str, sent: list[Any], lease: str | None,
    granted: int,
) -> None:  # fmt: skip
    fields = form(mode="subscribe", topic=topic, callback=CALLBACK)
    if lease is not None:
        fields["hub.lease_seconds"] = lease
    assert client.post("/hub", data=fields).status_code == 202
    assert subscriptions(settings)[0][3] == granted


def test_every_feed_of_every_listing_is_a_topic(
    client: TestClient, settings: Settings, topic: str, sent: list[Any]
) -> None:
    with session_scope(settings) as session:
        session.add(Category(slug="giao-duc", name="Giáo dục"))
    paths = ["all", "agency/so-noi-vu", "category/giao-duc"]
    for path in paths:
        for suffix in ("rss", "atom", "json"):
            fields = form(mode="subscribe", topic=f"{PUBLIC}/feeds/{path}.{suffix}",
                          callback=CALLBACK)  # fmt: skip
            assert client.post("/hub", data=fields).status_code == 202, (path, suffix)
    assert len(subscriptions(settings)) == 9


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (form(topic="T", callback=CALLBACK), "hub.mode"),
        (form(mode="publish", topic="T", callback=CALLBACK), "hub.mode"),
        (form(mode="subscribe", callback=CALLBACK), "hub.topic"),
        (form(mode="subscribe", topic=PUBLIC + "/feeds/agency/khong-co.atom",
              callback=CALLBACK), "hub.topic"),  # no such agency
        (form(mode="subscribe", topic=PUBLIC + "/feeds/category/khong-co.rss",
              callback=CALLBACK), "hub.topic"),  # no such category
        (form(mode="subscribe", topic="https://elsewhere.example/feeds/all.atom",
              callback=CALLBACK), "hub.topic"),
        (form(mode="subscribe", topic="T"), "hub.callback"),
        (form(mode="subscribe", topic="T", callback="ftp://example.org/x"), "hub.callback"),
        (form(mode="subscribe", topic="T", callback="/relative"), "hub.callback"),
        (form(mode="subscribe", topic="T", callback="http://e.org/" + "x" * 1000),
         "hub.callback"),
        (form(mode="subscribe", topic="T", callback=CALLBACK, lease_seconds="-5"),
         "hub.lease_seconds"),
        (form(mode="subscribe", topic="T", callback=CALLBACK, lease_seconds="1e3"),
         "hub.lease_seconds"),
        (form(mode="subscribe", topic="T", callback=CALLBACK, secret="x" * 200),
         "hub.secret"),
        (form(mode="subscribe", topic="T", callback=CALLBACK, secret="ắ" * 67),
         "hub.secret"),  # 201 bytes in UTF-8
    ],
)  # fmt: skip
def test_bad_requests_are_refused_at_once_naming_the_field(
    client: TestClient, settings: Settings, topic: str, sent: list[Any],
    fields: dict[str, str], field: str,
) -> None:  # fmt: skip
    fields = {name: topic if value == "T" else value for name, value in fields.items()}
    body = assert_problem(client.post("/hub", data=fields), 422)
    assert [error["field"] for error in body["errors"]] == [field]
    assert subscriptions(settings) == [] and sent == []


@pytest.mark.parametrize("callback", ["http://example.com/%7F", "http://%E2%98%83.example/"])
def test_a_callback_httpx_cannot_request_is_refused(
    client: TestClient, settings: Settings, topic: str, sent: list[Any], callback: str
) -> None:
    body = f"hub.mode=subscribe&hub.topic={topic}&hub.callback={callback}"
    problem = assert_problem(client.post("/hub", content=body, headers=FORM), 422)
    assert problem["errors"][0]["field"] == "hub.callback"
    assert "not a valid URL" in problem["detail"]
    assert subscriptions(settings) == [] and sent == []


def test_a_long_non_ascii_callback_is_refused_by_its_bytes(
    client: TestClient, settings: Settings, topic: str, sent: list[Any]
) -> None:
    # 990 characters but 2,932 bytes: past PostgreSQL's btree entry limit on (topic, callback).
    callback = "http://example.com/" + "ắ" * 971
    fields = form(mode="subscribe", topic=topic, callback=callback)
    problem = assert_problem(client.post("/hub", data=fields), 422)
    assert problem["errors"][0]["field"] == "hub.callback" and "bytes" in problem["detail"]
    assert subscriptions(settings) == [] and sent == []


def test_a_database_error_is_a_503_not_a_500(
    client: TestClient, topic: str, sent: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*_: Any) -> None:
        raise DataError("INSERT ...", {}, Exception("index row size exceeds btree maximum"))

    monkeypatch.setattr("services.ingest.hub.record_request", fails)
    response = client.post("/hub", data=form(mode="subscribe", topic=topic, callback=CALLBACK))
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "5" and sent == []


def test_a_field_given_twice_is_refused(client: TestClient, topic: str, sent: list[Any]) -> None:
    body = f"hub.mode=subscribe&hub.topic={topic}&hub.callback=a&hub.callback=b"
    problem = assert_problem(client.post("/hub", content=body, headers=FORM), 422)
    assert problem["errors"][0]["field"] == "hub.callback"


def test_only_forms_are_read(client: TestClient, topic: str, sent: list[Any]) -> None:
    response = client.post("/hub", json={"hub.mode": "subscribe", "hub.topic": topic})
    assert_problem(response, 415)
    assert_problem(client.post("/hub", content=b"hub.mode=\xff", headers=FORM), 400)
    assert sent == []


def test_unsubscribing_from_nothing_is_accepted_and_verifies_nothing(
    client: TestClient, settings: Settings, topic: str, sent: list[Any]
) -> None:
    response = client.post("/hub", data=form(mode="unsubscribe", topic=topic, callback=CALLBACK))
    assert response.status_code == 202
    assert subscriptions(settings) == [] and sent == []


def test_a_broker_outage_is_a_503_not_a_500(
    client: TestClient, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise ConnectionError("redis down")

    monkeypatch.setattr(client.app.state.celery, "send_task", down)  # type: ignore[attr-defined]
    response = client.post("/hub", data=form(mode="subscribe", topic=topic, callback=CALLBACK))
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "5"


class TestPrivateCallbacks:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"public_url": PUBLIC}  # the default: private callbacks refused

    @pytest.mark.parametrize(
        "callback",
        ["http://127.0.0.1:8080/push", "http://localhost/push", "http://10.0.0.7/push",
         "http://169.254.169.254/latest/meta-data/", "http://[::1]/push"],
    )  # fmt: skip
    def test_are_refused_without_the_setting(
        self, client: TestClient, settings: Settings, topic: str, sent: list[Any],
        callback: str,
    ) -> None:  # fmt: skip
        fields = form(mode="subscribe", topic=topic, callback=callback)
        body = assert_problem(client.post("/hub", data=fields), 422)
        assert body["errors"][0]["field"] == "hub.callback"
        assert "non-public address" in body["detail"]
        assert subscriptions(settings) == [] and sent == []
