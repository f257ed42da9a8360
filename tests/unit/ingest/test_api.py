"""The ingest API in-process: validation, auth, idempotency and problem answers.

These are unit tests: SQLite in a temp dir and Kombu's in-memory transport instead of Redis.
The same behaviours run against real Redis and workers in tests/integration.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.ingest.app import create_app
from shared.db import session_scope
from shared.models import Bulletin
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, auth_for


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_request_bytes": 50_000}


def count_bulletins(settings: Settings) -> int:
    with session_scope(settings) as session:
        return int(session.scalar(select(func.count()).select_from(Bulletin)) or 0)


def test_accepts_a_bulletin_and_reports_its_status(
    client: TestClient, auth: dict, settings: Settings
) -> None:
    answer = client.post(
        "/v1/bulletins",
        json={
            "title": "Kế hoạch tiêm chủng",
            "body": "Đoạn 1\n\nĐoạn 2",
            "author": "Hồng Nhung",
            "published_at": "2020-07-31T08:00:00+07:00",
            "category": "Y tế",
        },
        headers=auth,
    )
    assert answer.status_code == 202
    accepted = answer.json()
    assert accepted["status"] == "queued" and accepted["revision"] == 1
    assert (
        accepted["url"]
        == f"http://127.0.0.1:8000/so-noi-vu/ke-hoach-tiem-chung-{accepted['id']}.html"
    )
    assert answer.headers["location"] == accepted["status_url"]
    status = client.get(accepted["status_url"], headers=auth).json()
    assert status["body_html"] == "<p>Đoạn 1</p>\n<p>Đoạn 2</p>"
    assert status["published_at"].startswith("2020-07-31T01:00:00")  # stored in UTC
    assert status["guid"].startswith("urn:uuid:")
    assert status["category"] == "Y tế"


def test_input_is_nfc_normalised_and_html_sanitised(client: TestClient, auth: dict) -> None:
    nfd = unicodedata.normalize("NFD", "Thông báo khẩn")
    answer = client.post(
        "/v1/bulletins",
        json={
            "title": nfd,
            "body": "<p>Ổn <script>x()</script></p>",
            "body_format": "html",
            "summary": nfd + "\x07",
        },
        headers=auth,
    )
    status = client.get(answer.json()["status_url"], headers=auth).json()
    assert status["title"] == "Thông báo khẩn" and unicodedata.is_normalized("NFC", status["title"])
    assert status["summary"] == "Thông báo khẩn"
    assert status["body_html"] == "<p>Ổn </p>"


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        ({}, {"title", "body"}),
        ({"title": "  ", "body": "x"}, {"title"}),
        ({"title": "x", "body": "x", "body_format": "docx"}, {"body_format"}),
        ({"title": "x", "body": "x", "published_at": "2020-07-31 08:00"}, {"published_at"}),
        ({"title": "x", "body": "x", "titel": "typo"}, {"titel"}),
        ({"title": "x" * 501, "body": "x"}, {"title"}),
        ({"title": "x", "body": "x", "language": "tiếng việt"}, {"language"}),
        (["not", "an", "object"], {"body"}),
    ],
)
def test_invalid_fields_name_the_field(
    client: TestClient, auth: dict, settings: Settings, payload: object, fields: set[str]
) -> None:
    problem = assert_problem(client.post("/v1/bulletins", json=payload, headers=auth), 422)
    assert {error["field"] for error in problem["errors"]} == fields
    assert count_bulletins(settings) == 0


def test_malformed_json_is_a_400(client: TestClient, auth: dict) -> None:
    response = client.post(
        "/v1/bulletins",
        content=b'{"title": "x",',
        headers={**auth, "content-type": "application/json"},
    )
    assert "not valid JSON" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer wrong", "Basic dXNlcjpwYXNz", "bt_raw-key"]
)
def test_bad_or_missing_keys_are_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.post("/v1/bulletins", json={"title": "x", "body": "y"}, headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_oversized_bodies_are_413_whether_declared_or_streamed(
    client: TestClient, auth: dict, settings: Settings
) -> None:
    big = b'{"title": "x", "body": "' + b"a" * 60_000 + b'"}'
    assert_problem(
        client.post(
            "/v1/bulletins", content=big, headers={**auth, "content-type": "application/json"}
        ),
        413,
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold as it streams
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = client.post(
        "/v1/bulletins", content=chunks(), headers={**auth, "content-type": "application/json"}
    )
    assert assert_problem(streamed, 413)["limit"] == 50_000
    assert count_bulletins(settings) == 0


def test_idempotent_replay_and_conflict(client: TestClient, auth: dict, settings: Settings) -> None:
    headers = {**auth, "Idempotency-Key": "lan-1"}
    first = client.post("/v1/bulletins", json={"title": "A", "body": "B"}, headers=headers)
    again = client.post("/v1/bulletins", json={"body": "B", "title": "A"}, headers=headers)
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    problem = assert_problem(
        client.post("/v1/bulletins", json={"title": "A2", "body": "B"}, headers=headers), 409
    )
    assert problem["bulletin_id"] == first.json()["id"]
    # Keys are per agency: another agency may use the same key for its own bulletin.
    other = client.post(
        "/v1/bulletins",
        json={"title": "A", "body": "B"},
        headers={**auth_for(settings, "so-khac"), "Idempotency-Key": "lan-1"},
    )
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    assert count_bulletins(settings) == 2


def test_agencies_cannot_read_each_others_bulletins(
    client: TestClient, auth: dict, settings: Settings
) -> None:
    mine = client.post("/v1/bulletins", json={"title": "A", "body": "B"}, headers=auth).json()
    assert_problem(
        client.get(f"/v1/bulletins/{mine['id']}", headers=auth_for(settings, "so-khac")), 404
    )
    assert_problem(client.get("/v1/bulletins/987654", headers=auth), 404)
    assert client.get(f"/v1/bulletins/{mine['id']}", headers=auth).status_code == 200


def test_database_down_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        redis_url="memory://",
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/bulletins",
            json={"title": "A", "body": "B"},
            headers={"Authorization": "Bearer bt_x"},
        )
        assert_problem(response, 503)
        assert response.headers["retry-after"].isdigit()
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["database"].startswith("error")


def test_openapi_docs_show_the_contract_with_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    create = spec["components"]["schemas"]["BulletinCreate"]
    assert create["examples"][0]["title"].startswith("Ban hành Kế hoạch")
    responses = spec["paths"]["/v1/bulletins"]["post"]["responses"]
    assert {"202", "401", "409", "413", "422"} <= set(responses)


def test_unknown_routes_and_methods_are_problems_too(client: TestClient, auth: dict) -> None:
    assert_problem(client.get("/v2/nothing"), 404)
    assert_problem(client.delete("/v1/bulletins", headers=auth), 405)


def test_a_batch_gives_each_item_its_own_result(
    client: TestClient, auth: dict, settings: Settings
) -> None:
    items = [
        {"title": "Một", "body": "A", "idempotency_key": "b-1"},
        {"title": "", "body": "B"},  # invalid alone: 422, the rest still accepted
        {"title": "Ba", "body": "C", "published_at": "2999-01-01T00:00:00+07:00"},
        {"title": "Một", "body": "A", "idempotency_key": "b-1"},  # same key, same content
        {"title": "Khác", "body": "A", "idempotency_key": "b-1"},  # same key, other content
    ]
    answer = client.post("/v1/bulletins:batch", json={"bulletins": items}, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [202, 422, 202, 202, 409] and body["accepted"] == 3
    first, invalid, scheduled, replay, conflict = body["results"]
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3, 4]
    assert invalid["problem"]["errors"][0]["field"] == "title"
    assert scheduled["bulletin"]["status"] == "scheduled"
    assert replay["replayed"] is True and replay["bulletin"]["id"] == first["bulletin"]["id"]
    assert conflict["problem"]["bulletin_id"] == first["bulletin"]["id"]
    assert count_bulletins(settings) == 2
    # Retrying the whole batch creates nothing new for the keyed item.
    again = client.post("/v1/bulletins:batch", json={"bulletins": items[:1]}, headers=auth)
    assert again.json()["results"][0]["replayed"] is True
    assert count_bulletins(settings) == 2


@pytest.mark.parametrize("size", [0, 101])
def test_a_batch_holds_one_to_a_hundred_items(client: TestClient, auth: dict, size: int) -> None:
    bulletins = [{"title": f"T{i}", "body": "B"} for i in range(size)]
    problem = assert_problem(
        client.post("/v1/bulletins:batch", json={"bulletins": bulletins}, headers=auth), 422
    )
    assert problem["errors"][0]["field"] == "bulletins"


def test_a_full_batch_is_accepted(client: TestClient, auth: dict, settings: Settings) -> None:
    bulletins = [{"title": f"Bản tin {i}", "body": "Nội dung"} for i in range(100)]
    answer = client.post("/v1/bulletins:batch", json={"bulletins": bulletins}, headers=auth)
    assert answer.json()["accepted"] == 100
    assert len({r["bulletin"]["id"] for r in answer.json()["results"]}) == 100
    assert count_bulletins(settings) == 100
