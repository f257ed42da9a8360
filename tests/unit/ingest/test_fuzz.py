"""Whatever JSON arrives, the answer is a 202 or a precise 4xx problem, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.app import create_app
from shared.agencies import create_agency
from shared.db import create_schema, session_scope
from shared.settings import Settings

FIELDS = ["title", "body", "body_format", "summary", "author", "category", "published_at",
          "language"]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=5,
)
plausible = {
    "title": st.text(min_size=0, max_size=40) | json_values,
    "body": st.text(max_size=200) | json_values,
    "body_format": st.sampled_from(["text", "markdown", "html", "TEXT", ""]) | json_values,
    "summary": st.none() | st.text(max_size=40) | json_values,
    "author": st.none() | st.text(max_size=40),
    "category": st.none() | st.text(max_size=40),
    "published_at": st.none() | st.datetimes().map(str) | st.sampled_from(
        ["2020-07-31T08:00:00+07:00", "2020-02-30T00:00:00Z", "9999-12-31T23:59:59+14:00"]),
    "language": st.sampled_from(["vi", "en-US", "x", ""]) | json_values,
}  # fmt: skip
bulletins = st.fixed_dictionaries({}, optional=plausible) | json_values


@pytest.fixture(scope="module")
def client_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), redis_url="memory://")
    create_schema(settings_)
    with session_scope(settings_) as session:
        _agency, key = create_agency(session, name="Sở Thử", slug="so-thu")
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        yield client, key


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=bulletins)
def test_any_json_gets_an_answer_not_a_crash(
    client_and_key: tuple[TestClient, str], payload: object
) -> None:
    client, key = client_and_key
    response = client.post(
        "/v1/bulletins", json=payload, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"]
