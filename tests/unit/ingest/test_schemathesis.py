"""Schemathesis against the ingest API's own OpenAPI document, in-process.

Every operation, with data that fits the schema and data that doesn't, under every check
Schemathesis has: no 5xx, and every answer (status, content type, headers, body) is one the
document promises. Then the edges fuzzing reaches only by luck, one by one, and the places
where the document states a validation rule, checked against the rule itself.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import Case
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingest.app import create_app
from services.ingest.schemas import NOT_BLANK_PATTERN
from shared.agencies import create_agency, issue_key
from shared.db import create_schema, session_scope
from shared.models import ApiKey
from shared.sanitize import clean_text
from shared.settings import Settings

SEED = 7
EXAMPLES_PER_OPERATION = 50  # the fuzzing phase's; the examples and coverage phases add theirs


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        redis_url="memory://",
        # Schemathesis sends hundreds of writes a second; the limits have their own tests.
        rate_limit="100000/second",
        batch_rate_limit="100000/second",
        # Set, so the operators' API answers as in production (401 without this token, which
        # Schemathesis never sends) instead of 404 (unset: no such API).
        operator_token="a-token-schemathesis-never-sends",
    )


def _openapi_document() -> dict[str, Any]:
    """The document as the app serves it. Read at collection time (parametrize needs the
    operations then) from a throwaway app; the tests call a fresh one from a fixture."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(_settings(Path(tmp)))
        try:
            return app.openapi()
        finally:
            app.state.writer.close()


class _Target:
    """The ASGI app Schemathesis calls: it forwards requests to the app the fixture built, so
    every request, the checks' own probes included, reaches the same in-process app. The
    app's lifespan is the fixture's: Schemathesis ends the lifespans it started after every
    operation, which would stop the app's writer thread."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.client: TestClient | None = None  # for the tests that send their own requests
        self.settings: Settings | None = None
        self.key = ""
        self.key_id = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.app is not None, "the api fixture did not run"
        await self.app(scope, receive, send)


TARGET = _Target()
DOCUMENT = _openapi_document()
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",  # positive and negative
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
        },
        "checks": {
            "enabled": True,
            # Answers to well-formed requests that the document promises and no schema can
            # foresee: a stale `If-Match` (412), a body over the byte limit (413).
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "404", "409", "412", "413", "429"]
            },
            # A request that breaks the schema may also be refused for its size (413).
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "404", "405", "409", "413", "415", "422"]
            },
        },
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = TARGET


def _current_key(target: _Target) -> str:
    """The agency's key. Schemathesis may revoke it through `DELETE /v1/keys/{key_id}`: then
    the agency gets a new one, as a real agency would."""
    assert target.settings is not None
    with session_scope(target.settings) as session:
        row = session.get(ApiKey, target.key_id)
        assert row is not None
        if row.revoked_at is not None:
            new_row, target.key = issue_key(session, row.agency_id)
            session.flush()
            target.key_id = new_row.id
    return target.key


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Target]:
    settings = _settings(tmp_path_factory.mktemp("schemathesis"))
    create_schema(settings)
    with session_scope(settings) as session:
        agency, TARGET.key = create_agency(session, name="Sở Thử", slug="so-thu")
        session.flush()
        TARGET.key_id = agency.api_keys[0].id
    app = create_app(settings)
    TARGET.app, TARGET.settings = app, settings
    with TestClient(app, raise_server_exceptions=False) as client:  # runs the lifespan
        TARGET.client = client
        yield TARGET
    TARGET.app = TARGET.client = TARGET.settings = None


@schema.parametrize()
def test_every_answer_is_one_the_document_promises(case: Case, api: _Target) -> None:
    # Passed as the caller's own header, so the auth checks also probe without it.
    case.call_and_validate(headers={"Authorization": f"Bearer {_current_key(api)}"})


def _auth(api: _Target) -> dict[str, str]:
    return {"Authorization": f"Bearer {_current_key(api)}"}


def _client(api: _Target) -> TestClient:
    assert api.client is not None
    return api.client


GOOD = b'{"title": "Tin", "body": "A"}'
EDGES = [
    # (method, path, Content-Type, body, status, title, in the detail)
    ("POST", "/v1/bulletins", "text/plain", GOOD, 415, "Unsupported media type", "text/plain"),
    ("POST", "/v1/bulletins", "application/x-www-form-urlencoded", b"title=Tin&body=A", 415,
     "Unsupported media type", "form"),
    ("POST", "/v1/bulletins", None, GOOD, 415, "Unsupported media type", "no Content-Type"),
    ("POST", "/v1/bulletins:batch", "text/plain", b'{"bulletins": [{}]}', 415,
     "Unsupported media type", "application/json"),
    ("PUT", "/v1/bulletins/1", "multipart/form-data; boundary=x", b"--x--", 415,
     "Unsupported media type", "multipart"),
    ("POST", "/v1/bulletins", "application/json", b'{"title": "\xff\xfe", "body": "A"}', 400,
     "Malformed JSON", "UTF-8"),
    ("POST", "/v1/bulletins", "application/json", b'{"title": "Tin", "body": ', 400,
     "Malformed JSON", "not valid JSON"),
    ("POST", "/v1/bulletins", "application/json", b"[" * 100_000 + b"]" * 100_000, 400,
     "Malformed JSON", "nested too deeply"),
    ("POST", "/v1/bulletins", "application/json", b"9" * 5000, 400, "Malformed JSON",
     "digits"),
    ("POST", "/v1/bulletins", "application/json",
     b'{"title": "Tin", "body": "A", "published_at": 1596157200}', 422, "Invalid request",
     "published_at"),
    ("POST", "/v1/bulletins", "application/json",
     b'{"title": "Tin", "body": "A", "published_at": "1596157200"}', 422, "Invalid request",
     "published_at"),
    ("POST", "/v1/bulletins", "application/json", b'{"title": "Tin", "body": 1e400}', 422,
     "Invalid request", "body"),
    ("POST", "/v1/bulletins", "application/json", b"[]", 422, "Invalid request", "body"),
    ("GET", "/v1/bulletins/1e400", None, b"", 422, "Invalid request", "bulletin_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "status", "title", "detail"), EDGES
)
def test_malformed_requests_get_the_documented_problem(
    api: _Target, method: str, path: str, content_type: str | None, body: bytes, status: int,
    title: str, detail: str,
) -> None:  # fmt: skip
    headers = _auth(api)
    if content_type:
        headers["Content-Type"] = content_type
    response = _client(api).request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["title"]) == (status, title)
    assert detail in problem["detail"]
    operation = schema[re.sub(r"/v1/bulletins/[^/]+$", "/v1/bulletins/{bulletin_id}", path)]
    operation[method].validate_response(response)  # the document promises this answer


def test_deep_json_in_a_batch_item_is_that_items_422(api: _Target) -> None:
    """Nesting JSON accepts but validation cannot walk is the item's problem, not a 500."""
    deep = "[" * 900 + "]" * 900
    body = f'{{"bulletins": [{{"title": {deep}, "body": "A"}}, {{"title": "Tin", "body": "A"}}]}}'
    response = _client(api).post(
        "/v1/bulletins:batch",
        content=body,
        headers={**_auth(api), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert [item["status"] for item in response.json()["results"]] == [422, 202]
    schema["/v1/bulletins:batch"]["POST"].validate_response(response)


@pytest.mark.parametrize("method", ["PATCH", "POST", "HEAD"])
def test_a_wrong_method_is_a_405_naming_every_allowed_method(api: _Target, method: str) -> None:
    response = _client(api).request(method, "/v1/bulletins/1", headers=_auth(api))
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PUT"


@pytest.mark.parametrize(
    "value",
    [b"\xe9t\xe9", b"", b"x" * 201],
)
def test_a_header_of_the_wrong_shape_is_a_422(api: _Target, value: bytes) -> None:
    response = _client(api).post(
        "/v1/bulletins",
        json={"title": "Tin", "body": "A"},
        headers={**_auth(api), "Idempotency-Key": value},  # type: ignore[dict-item]
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    schema["/v1/bulletins"]["POST"].validate_response(response)


# -- Where the document states a validation rule, it must be the rule the API applies. ------


def _documented(field: str) -> jsonschema_rs.Validator:
    """A validator for one field of BulletinCreate as the document describes it."""
    field_schema = DOCUMENT["components"]["schemas"]["BulletinCreate"]["properties"][field]
    return jsonschema_rs.validator_for(field_schema, validate_formats=True)


def test_the_documented_not_blank_rule_is_the_one_applied() -> None:
    """Title and body must hold a character cleaning keeps and strip() doesn't remove; the
    document says so with a pattern. Every code point, both ways (lone surrogates aside: no
    validator's regex can name them)."""
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    kept = {c for c in everything if clean_text(c).strip()}
    assert set(re.findall(NOT_BLANK_PATTERN, everything)) == kept
    # And the validators' own regex dialect agrees on the ones refused.
    title = _documented("title")
    assert not any(title.is_valid(c) for c in set(everything) - kept)
    assert title.is_valid("\u3000Tin ") and title.is_valid("\U0001f600")


PUBLISHED_AT = [
    "2020-07-31T08:00:00+07:00",
    "2020-07-31t08:00:00.123456789z",
    "1001-01-01T00:00:00+23:59",
    "9998-12-31T23:59:59-23:59",
    "1000-12-31T23:59:59Z",
    "9999-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "2020-02-30T00:00:00Z",
    "2020-07-31T24:00:00Z",
    "2020-07-31T23:59:60Z",
    "2020-07-31T08:00:00+24:00",
    "2020-07-31T08:00:00.1234567890Z",
    "2020-07-31T08:00:00",
    "2020-07-31 08:00:00Z",
    "2020-07-31T08:00Z",
    "1596157200",
]


@pytest.mark.parametrize("value", PUBLISHED_AT)
def test_the_documented_published_at_rule_is_the_one_applied(api: _Target, value: str) -> None:
    response = _client(api).post(
        "/v1/bulletins",
        json={"title": "Tin", "body": "A", "published_at": value},
        headers=_auth(api),
    )
    assert response.status_code in (202, 422), response.text
    assert (response.status_code == 202) == _documented("published_at").is_valid(value)
