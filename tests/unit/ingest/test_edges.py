"""Issue 7's edges of the ingest API, in-process: values the database cannot store, empty and
over-long idempotency keys, ids beyond 64 bits, ETag / If-Match, a writer thread that must
survive cancelled requests, and public URLs that never come from the client's Host header.

Unit tests: SQLite in a temp dir and Kombu's in-memory transport. The races and the
PostgreSQL side of these run against whole systems in tests/integration/test_edges.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.ingest.app import create_app
from services.ingest.schemas import BulletinCreate
from shared.db import session_scope
from shared.models import Bulletin
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, auth_for, bearer, make_settings, new_agency

# Values that pass the API's validation today but cannot be stored: years 0 and 10000 once
# converted to UTC, and a language tag longer than its 16-character column.
YEAR_ZERO = "0001-01-01T00:00:00+14:00"
YEAR_10000 = "9999-12-31T23:59:59-14:00"
LONG_LANGUAGE = "vi-" + "abcdefgh-" * 3 + "x1"
UNSTORABLE = [
    ("published_at", YEAR_ZERO),
    ("published_at", YEAR_10000),
    ("language", LONG_LANGUAGE),
]
BEYOND_64_BITS = [2**63, 2**64, 99999999999999999999999]
BAD_KEYS = ["", " ", "   ", "k" * 201]
EVIL = "evil.example"


def stored_titles(settings: Settings) -> dict[int, str]:
    with session_scope(settings) as session:
        return {row.id: row.title for row in session.execute(select(Bulletin.id, Bulletin.title))}


def fields_of(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


def names_the_idempotency_key(problem: dict[str, Any]) -> bool:
    """Header or item field, whatever its spelling (Idempotency-Key, idempotency_key)."""
    return any("idempotency" in error["field"].lower() for error in problem.get("errors", []))


def assert_batch_matches_rows(
    answer: httpx.Response, titles: list[str], settings: Settings
) -> None:
    """A batch answer describes exactly what was stored: every item answered 202 is a row
    (with the id it was given), and no item answered otherwise is."""
    assert answer.status_code == 200, answer.text
    rows = stored_titles(settings)
    reported = {
        r["bulletin"]["id"]: titles[r["index"]]
        for r in answer.json()["results"]
        if r["status"] == 202
    }
    assert rows == reported


def post(client: TestClient, auth: dict[str, str], title: str, **fields: Any) -> httpx.Response:
    return client.post(
        "/v1/bulletins", json={"title": title, "body": "Nội dung.", **fields}, headers=auth
    )


# Defect 1: values that pass validation but cannot be stored ------------------------------


@pytest.mark.parametrize(("field", "value"), UNSTORABLE)
def test_a_value_the_database_cannot_store_is_a_422_naming_the_field(
    client: TestClient, auth: dict[str, str], settings: Settings, field: str, value: str
) -> None:
    problem = assert_problem(post(client, auth, "Không lưu được", **{field: value}), 422)
    assert fields_of(problem) == {field}
    assert stored_titles(settings) == {}
    assert post(client, auth, "Bình thường").status_code == 202


@pytest.mark.parametrize(("field", "value"), UNSTORABLE)
def test_a_correction_the_database_cannot_store_is_a_422_and_changes_nothing(
    client: TestClient, auth: dict[str, str], field: str, value: str
) -> None:
    created = post(client, auth, "Bản gốc").json()
    answer = client.put(
        f"/v1/bulletins/{created['id']}",
        json={"title": "Bản sửa", "body": "Mới.", field: value},
        headers=auth,
    )
    assert fields_of(assert_problem(answer, 422)) == {field}
    document = client.get(f"/v1/bulletins/{created['id']}", headers=auth).json()
    assert (document["title"], document["revision"]) == ("Bản gốc", 1)


def test_unstorable_items_of_a_batch_get_their_own_422_and_the_rest_are_stored(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    items = [
        {"title": "Tốt 1", "body": "A"},
        {"title": "Năm 0", "body": "A", "published_at": YEAR_ZERO},
        {"title": "Tốt 2", "body": "A", "idempotency_key": "tot-2"},
        {"title": "Ngôn ngữ dài", "body": "A", "language": LONG_LANGUAGE},
        {"title": "Năm 10000", "body": "A", "published_at": YEAR_10000},
        {"title": "Tốt 3", "body": "A"},
    ]
    answer = client.post("/v1/bulletins:batch", json={"bulletins": items}, headers=auth)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 202, 422, 422, 202]
    assert [fields_of(results[i]["problem"]) for i in (1, 3, 4)] == [
        {"published_at"},
        {"language"},
        {"published_at"},
    ]
    assert answer.json()["accepted"] == 3
    assert_batch_matches_rows(answer, [item["title"] for item in items], settings)


# Defect 4: empty, blank and over-long idempotency keys -----------------------------------


@pytest.mark.parametrize("key", BAD_KEYS, ids=["empty", "space", "spaces", "201-chars"])
def test_a_bad_idempotency_key_is_a_422_and_the_agency_keeps_working(
    client: TestClient, auth: dict[str, str], settings: Settings, key: str
) -> None:
    def with_key(title: str, value: str | None) -> httpx.Response:
        headers = auth if value is None else {**auth, "Idempotency-Key": value}
        return client.post("/v1/bulletins", json={"title": title, "body": "B"}, headers=headers)

    assert names_the_idempotency_key(assert_problem(with_key("Khóa xấu", key), 422))
    assert stored_titles(settings) == {}
    # Nothing was poisoned: later submissions of the agency, with or without keys, work...
    assert with_key("Không khóa", None).status_code == 202
    assert with_key("Khóa tốt", "khoa-tot-1").status_code == 202
    assert with_key("Khóa tốt khác", "khoa-tot-2").status_code == 202
    # ...and the same bad key is refused again, not a 500.
    assert names_the_idempotency_key(assert_problem(with_key("Khóa xấu lần 2", key), 422))
    assert sorted(stored_titles(settings).values()) == ["Khóa tốt", "Khóa tốt khác", "Không khóa"]


def test_batch_items_with_a_bad_key_are_422_and_the_answer_is_what_was_stored(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    items = [
        {"title": "Lô 0", "body": "A", "idempotency_key": "lo-0"},
        {"title": "Lô 1", "body": "A", "idempotency_key": ""},
        {"title": "Lô 2", "body": "A"},
        {"title": "Lô 3", "body": "A", "idempotency_key": "   "},
        {"title": "Lô 4", "body": "A", "idempotency_key": ""},
        {"title": "Lô 5", "body": "A", "idempotency_key": "k" * 201},
        {"title": "Lô 6", "body": "A", "idempotency_key": "lo-6"},
    ]
    titles = [item["title"] for item in items]
    answer = client.post("/v1/bulletins:batch", json={"bulletins": items}, headers=auth)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [202, 422, 202, 422, 422, 422, 202]
    assert all(names_the_idempotency_key(results[i]["problem"]) for i in (1, 3, 4, 5))
    assert_batch_matches_rows(answer, titles, settings)
    # Sent again, the keyed items are replays and the bad ones still 422: only the unkeyed
    # item is new, and the answer still says exactly that.
    again = client.post("/v1/bulletins:batch", json={"bulletins": items}, headers=auth)
    assert [r["status"] for r in again.json()["results"]] == [202, 422, 202, 422, 422, 422, 202]
    assert [r["replayed"] for r in again.json()["results"] if r["status"] == 202] == [
        True,
        False,
        True,
    ]
    assert sorted(stored_titles(settings).values()) == ["Lô 0", "Lô 2", "Lô 2", "Lô 6"]


# Defect 5: ids beyond 64 bits -------------------------------------------------------------


@pytest.mark.parametrize("bulletin_id", BEYOND_64_BITS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_ids_beyond_64_bits_are_not_found(
    client: TestClient, auth: dict[str, str], method: str, bulletin_id: int
) -> None:
    body = {"title": "Sửa", "body": "B"} if method == "PUT" else None
    answer = client.request(method, f"/v1/bulletins/{bulletin_id}", json=body, headers=auth)
    assert_problem(answer, 404)


# Defect 3, the HTTP face: ETag and If-Match -----------------------------------------------


def test_etag_and_if_match_guard_corrections_and_withdrawals(
    client: TestClient, auth: dict[str, str]
) -> None:
    url = f"/v1/bulletins/{post(client, auth, 'Phiên bản 1').json()['id']}"

    def etag() -> str:
        answer = client.get(url, headers=auth)
        assert answer.status_code == 200
        return answer.headers["etag"]

    def change(method: str, if_match: str, title: str | None = None) -> httpx.Response:
        body = {"title": title, "body": title} if title else None
        return client.request(method, url, json=body, headers={**auth, "If-Match": if_match})

    first = etag()
    assert etag() == first  # stable while nothing changes
    corrected = change("PUT", first, "Phiên bản 2")
    assert corrected.status_code == 202, corrected.text
    second = corrected.headers["etag"]
    assert second != first and etag() == second  # the answer carries the new one
    # A client still holding the first ETag is refused, and nothing changes.
    for method, title in (("PUT", "Ghi đè cũ"), ("DELETE", None)):
        stale = change(method, first, title)
        assert_problem(stale, 412)
    document = client.get(url, headers=auth).json()
    assert (document["title"], document["revision"], document["status"]) == (
        "Phiên bản 2",
        2,
        "queued",
    )
    assert etag() == second
    # `*` matches whatever the current revision is.
    anything = change("PUT", "*", "Phiên bản 3")
    assert anything.status_code == 202 and anything.headers["etag"] not in (first, second)
    withdrawn = change("DELETE", anything.headers["etag"])
    assert withdrawn.status_code == 202, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    assert etag() == withdrawn.headers["etag"] != anything.headers["etag"]


def test_without_if_match_changes_still_go_through(
    client: TestClient, auth: dict[str, str]
) -> None:
    url = f"/v1/bulletins/{post(client, auth, 'Không điều kiện').json()['id']}"
    answer = client.put(url, json={"title": "Sửa", "body": "B"}, headers=auth)
    assert answer.status_code == 202 and answer.json()["revision"] == 2
    assert answer.headers["etag"] == client.get(url, headers=auth).headers["etag"]


# Defect 8: the writer thread --------------------------------------------------------------


async def post_in_process(app: FastAPI, auth: dict[str, str], timeout: float) -> httpx.Response:
    """One POST through the ASGI app, given up (and cancelled) after `timeout`: a dead writer
    thread would otherwise leave it waiting for ever."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as api:
        request = api.post(
            "/v1/bulletins", json={"title": "Sau khi hủy", "body": "B"}, headers=auth
        )
        return await asyncio.wait_for(request, timeout)


def test_cancelled_requests_never_kill_the_writer(settings: Settings) -> None:
    agency_id, key = new_agency(settings, "so-huy")
    auth = bearer(key)
    app = create_app(settings)
    writer = app.state.writer
    try:
        # A client that disconnects cancels its request's future, often before the writer
        # got to it: the writer must skip or finish it, and live on.
        cancelled = 0
        for index in range(300):
            bulletin_in = BulletinCreate(title=f"Hủy {index}", body="B")
            future = writer.submit(agency_id, bulletin_in, "<p>B</p>", None)
            cancelled += future.cancel()
        assert cancelled > 0  # the case under test really happened
        try:
            # Generous: only a writer that never answers misses it.
            answer = asyncio.run(post_in_process(app, auth, timeout=30))
        except TimeoutError:
            pytest.fail("a POST after cancelled requests never got an answer: the writer died")
        assert answer.status_code == 202, answer.text
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        writer.close()


def test_healthz_fails_when_the_writer_is_not_alive(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        app.state.writer.close()  # its thread ends, as if it had died
        health = client.get("/healthz")
        assert_problem(health, 503)
        assert health.headers["retry-after"].isdigit()


# Defect 9: public URLs come from settings, never from the Host header ---------------------


def assert_no_evil(answer: httpx.Response) -> None:
    assert EVIL not in answer.text, answer.text
    assert all(EVIL not in value for value in answer.headers.values()), answer.headers


def test_status_urls_and_locations_come_from_the_ingest_public_url(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ingest_public_url="https://api.bantin.example/")
    auth = auth_for(settings, "so-host")
    hostile = {**auth, "Host": EVIL, "X-Forwarded-Host": EVIL, "Forwarded": f"host={EVIL}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        created = client.post(
            "/v1/bulletins", json={"title": "Địa chỉ", "body": "B"}, headers=hostile
        )
        assert created.status_code == 202
        status_url = f"https://api.bantin.example/v1/bulletins/{created.json()['id']}"
        assert created.json()["status_url"] == created.headers["location"] == status_url
        assert created.json()["url"].startswith("http://127.0.0.1:8000/so-host/")
        path = f"/v1/bulletins/{created.json()['id']}"
        answers = [
            created,
            client.get(path, headers=hostile),
            client.put(path, json={"title": "Địa chỉ mới", "body": "C"}, headers=hostile),
            client.post(
                "/v1/bulletins:batch",
                json={"bulletins": [{"title": "L", "body": "B"}]},
                headers=hostile,
            ),
            client.delete(path, headers=hostile),
            # A redirect (a trailing slash) must not send the client to another host either.
            client.get(path + "/", headers=hostile, follow_redirects=False),
            client.get("/docs/", headers=hostile, follow_redirects=False),
        ]
    for answer in answers:
        assert answer.status_code < 500, answer.text
        assert_no_evil(answer)
    for answer in answers[2:5:2]:  # the PUT and the DELETE
        assert answer.json()["status_url"] == answer.headers["location"] == status_url
    batch_item = answers[3].json()["results"][0]["bulletin"]
    assert batch_item["status_url"].startswith("https://api.bantin.example/v1/bulletins/")


def test_the_ingest_public_url_defaults_to_the_ingest_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ingest_host="10.1.2.3", ingest_port=9123)
    auth = auth_for(settings, "so-mac-dinh")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        created = client.post(
            "/v1/bulletins", json={"title": "Mặc định", "body": "B"}, headers={**auth, "Host": EVIL}
        )
    assert created.status_code == 202
    expected = f"http://10.1.2.3:9123/v1/bulletins/{created.json()['id']}"
    assert created.json()["status_url"] == created.headers["location"] == expected
    assert_no_evil(created)


# Nested this deep, sanitising alone took minutes (html5ever under nh3 is worse than linear in
# depth); shallower, but in the writer thread, it stalled every agency's submissions.
TOO_DEEP = "<div>" * 5000 + "x"


def test_a_body_nested_too_deep_is_a_422_and_spares_the_other_items(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    problem = assert_problem(
        client.post("/v1/bulletins", json={"title": "Sâu", "body": TOO_DEEP,
                                           "body_format": "html"}, headers=auth),
        422,
    )  # fmt: skip
    assert [error["field"] for error in problem["errors"]] == ["body"]
    # Word-processor HTML with unclosed paragraphs and cells is not "deep".
    sloppy = "<table>" + "<tr><td>ô<td>ơ" * 2000 + "</table>" + "<p>đoạn" * 2000
    answer = client.post("/v1/bulletins:batch", headers=auth, json={"bulletins": [
        {"title": "Sâu", "body": TOO_DEEP, "body_format": "html"},
        {"title": "Cẩu thả", "body": sloppy, "body_format": "html"},
        {"title": "Thường", "body": "<p>Bình thường</p>", "body_format": "html"},
    ]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert [item["status"] for item in answer.json()["results"]] == [422, 202, 202]
    with session_scope(settings) as session:
        titles = set(session.scalars(select(Bulletin.title)))
    assert titles == {"Cẩu thả", "Thường"}
