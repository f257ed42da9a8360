"""The operators' API: agencies listed, created, rotated, disabled and enabled over HTTP, with
the operator token and nothing else."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from services.ingest.deps import KEY_CACHE_SECONDS, Caller, KeyCache
from shared.agencies import KEY_PREFIX, set_disabled
from shared.db import session_scope
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, bearer, make_settings, new_key

TOKEN = "operator-token-for-the-tests-0123456789"
OPERATOR = bearer(TOKEN)
BULLETIN = {"title": "Thông báo", "body": "Nội dung."}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"operator_token": TOKEN}


def create(client: TestClient, name: str, slug: str | None = None) -> dict[str, Any]:
    body = {"name": name} if slug is None else {"name": name, "slug": slug}
    response = client.post("/v1/admin/agencies", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


ROUTES = [
    ("GET", "/v1/admin/agencies"),
    ("GET", "/v1/admin/agencies/so-a"),
    ("POST", "/v1/admin/agencies"),
    ("POST", "/v1/admin/agencies/so-a/rotate-key"),
    ("POST", "/v1/admin/agencies/so-a/disable"),
    ("POST", "/v1/admin/agencies/so-a/enable"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_without_an_operator_token_setting_the_admin_api_does_not_exist(
    tmp_path: Any, method: str, path: str
) -> None:
    settings = make_settings(tmp_path)  # no operator_token
    with TestClient(create_app(settings)) as client:
        for headers in ({}, OPERATOR, bearer("")):
            response = client.request(method, path, json={"name": "A"}, headers=headers)
            assert_problem(response, 404)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_wrong_missing_or_agency_credential_gets_401_with_a_challenge(
    client: TestClient, settings: Settings, method: str, path: str
) -> None:
    agency_key = new_key(settings, "so-a")
    for headers in ({}, bearer(TOKEN + "x"), bearer(TOKEN[:-1]), bearer(agency_key),
                    {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
        response = client.request(method, path, json={"name": "A"}, headers=headers)
        body = assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "operator" in body["detail"]
    # An invalid body does not get past the token check either: 401 before 422.
    assert_problem(client.post("/v1/admin/agencies", json={}, headers=bearer("x")), 401)


def test_the_operator_token_is_no_agency_key(client: TestClient) -> None:
    for path in ("/v1/keys", "/v1/bulletins/1"):
        assert_problem(client.get(path, headers=OPERATOR), 401)
    assert_problem(client.post("/v1/bulletins", json=BULLETIN, headers=OPERATOR), 401)


def test_create_answers_201_with_the_key_once_and_the_key_works(client: TestClient) -> None:
    response = client.post(
        "/v1/admin/agencies", json={"name": "Sở Nội vụ", "slug": "so-noi-vu"}, headers=OPERATOR
    )
    assert response.status_code == 201 and response.headers["cache-control"] == "no-store"
    created = response.json()
    expected = {"slug": "so-noi-vu", "name": "Sở Nội vụ", "status": "active", "active_keys": 1,
                "disabled_at": None}  # fmt: skip
    assert created["agency"] == {**created["agency"], **expected}
    key = created["key"]["key"]
    assert key.startswith(KEY_PREFIX) and created["key"]["prefix"] == key[:16]
    accepted = client.post("/v1/bulletins", json=BULLETIN, headers=bearer(key))
    assert accepted.status_code == 202, accepted.text
    listed = client.get("/v1/admin/agencies", headers=OPERATOR).json()["agencies"]
    assert [a["slug"] for a in listed] == ["so-noi-vu"]
    assert listed[0]["bulletins"]["queued"] == 1 and "key" not in listed[0]


def test_create_refuses_a_taken_or_bad_slug_and_a_bad_body(client: TestClient) -> None:
    create(client, "Sở A", "so-a")
    taken = client.post("/v1/admin/agencies", json={"name": "B", "slug": "so-a"}, headers=OPERATOR)
    assert "so-a" in assert_problem(taken, 409)["detail"]
    for body, field in [
        ({"name": "B", "slug": "feeds"}, "slug"),  # reserved for the site itself
        ({"name": "B", "slug": "!!!"}, "slug"),
        ({"name": "   "}, "name"),
        ({"name": ""}, "name"),
        ({"slug": "so-b"}, "name"),
        ({"name": "B", "extra": 1}, "extra"),
    ]:
        response = client.post("/v1/admin/agencies", json=body, headers=OPERATOR)
        problem = assert_problem(response, 422)
        assert [e["field"] for e in problem["errors"]] == [field], problem
    assert len(client.get("/v1/admin/agencies", headers=OPERATOR).json()["agencies"]) == 1


def test_unknown_slugs_get_404(client: TestClient) -> None:
    for method, path in ROUTES[1:]:
        if path.endswith("/agencies"):
            continue
        body = assert_problem(client.request(method, path, headers=OPERATOR), 404)
        assert "so-a" in body["detail"]


def test_a_disabled_agency_gets_403_and_its_bulletins_stay_enable_restores(
    client: TestClient,
) -> None:
    key = create(client, "Sở A", "so-a")["key"]["key"]
    other = create(client, "Sở B", "so-b")["key"]["key"]
    accepted = client.post("/v1/bulletins", json=BULLETIN, headers=bearer(key))
    assert accepted.status_code == 202  # and now the key is in this process's cache

    disabled = client.post("/v1/admin/agencies/so-a/disable", headers=OPERATOR)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "disabled" and disabled.json()["disabled_at"]
    for method, path in [("GET", "/v1/keys"), ("POST", "/v1/bulletins"),
                         ("GET", f"/v1/bulletins/{accepted.json()['id']}")]:  # fmt: skip
        refused = client.request(method, path, json=BULLETIN, headers=bearer(key))
        problem = assert_problem(refused, 403)  # at once: this process dropped it from its cache
        assert problem["title"] == "Agency disabled" and "enable" in problem["detail"]
        assert problem["agency"] == "so-a" and "www-authenticate" not in refused.headers
    assert client.get("/v1/keys", headers=bearer(other)).status_code == 200  # others unaffected
    summary = client.get("/v1/admin/agencies/so-a", headers=OPERATOR).json()
    assert summary["bulletins"]["queued"] == 1  # nothing withdrawn

    again = client.post("/v1/admin/agencies/so-a/disable", headers=OPERATOR)
    assert again.status_code == 200 and again.json() == disabled.json()  # idempotent
    enabled = client.post("/v1/admin/agencies/so-a/enable", headers=OPERATOR)
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"
    assert enabled.json()["disabled_at"] is None
    assert client.post("/v1/bulletins", json=BULLETIN, headers=bearer(key)).status_code == 202
    assert client.post("/v1/admin/agencies/so-a/enable", headers=OPERATOR).json() == {
        **enabled.json(),
        "bulletins": {**enabled.json()["bulletins"], "queued": 2},
    }


def test_a_disable_made_elsewhere_reaches_this_process_within_the_cache_time(
    client: TestClient, settings: Settings
) -> None:
    key = create(client, "Sở A", "so-a")["key"]["key"]
    assert client.get("/v1/keys", headers=bearer(key)).status_code == 200  # cached now
    with session_scope(settings) as session:  # as `bantin agency disable` does, from outside
        assert set_disabled(session, "so-a", True) is True
    time.sleep(KEY_CACHE_SECONDS + 0.1)  # the cached entry has expired by now, whatever the load
    assert_problem(client.get("/v1/keys", headers=bearer(key)), 403)
    with session_scope(settings) as session:
        assert set_disabled(session, "so-a", False) is True
    time.sleep(KEY_CACHE_SECONDS + 0.1)
    assert client.get("/v1/keys", headers=bearer(key)).status_code == 200


def test_rotate_revokes_the_other_keys_unless_told_to_keep_them(client: TestClient) -> None:
    first = create(client, "Sở A", "so-a")["key"]
    kept = client.post("/v1/admin/agencies/so-a/rotate-key?keep_old=true", headers=OPERATOR)
    assert kept.status_code == 200 and kept.headers["cache-control"] == "no-store"
    assert kept.json()["revoked"] == [] and kept.json()["agency"]["active_keys"] == 2
    second = kept.json()["key"]
    for key in (first["key"], second["key"]):
        assert client.get("/v1/keys", headers=bearer(key)).status_code == 200

    rotated = client.post("/v1/admin/agencies/so-a/rotate-key", headers=OPERATOR)
    assert rotated.status_code == 200
    assert rotated.json()["revoked"] == [first["id"], second["id"]]
    assert rotated.json()["agency"]["active_keys"] == 1
    for key in (first["key"], second["key"]):  # at once on this process
        assert_problem(client.get("/v1/keys", headers=bearer(key)), 401)
    listed = client.get("/v1/keys", headers=bearer(rotated.json()["key"]["key"]))
    assert [k["revoked_at"] is None for k in listed.json()["keys"]] == [False, False, True]

    bad = client.post("/v1/admin/agencies/so-a/rotate-key?keep_old=maybe", headers=OPERATOR)
    assert assert_problem(bad, 422)["errors"][0]["field"] == "query.keep_old"


def test_a_disabled_agency_can_be_rotated_and_its_new_key_works_once_enabled(
    client: TestClient,
) -> None:
    create(client, "Sở A", "so-a")
    client.post("/v1/admin/agencies/so-a/disable", headers=OPERATOR)
    new = client.post("/v1/admin/agencies/so-a/rotate-key", headers=OPERATOR).json()["key"]["key"]
    assert_problem(client.get("/v1/keys", headers=bearer(new)), 403)
    client.post("/v1/admin/agencies/so-a/enable", headers=OPERATOR)
    assert client.get("/v1/keys", headers=bearer(new)).status_code == 200


def test_the_admin_api_is_documented_with_its_own_security_scheme(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["OperatorToken"] == {**schemes["OperatorToken"], "type": "http",
                                        "scheme": "bearer"}  # fmt: skip
    admin = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        if path.startswith("/v1/admin/")
        for method, operation in item.items()
    }
    assert set(admin) == {(method, path.replace("so-a", "{slug}")) for method, path in ROUTES}
    for (_method, path), operation in admin.items():
        assert operation["tags"] == ["admin"] and operation["summary"], path
        assert operation["security"] == [{"OperatorToken": []}], path
        assert "401" in operation["responses"] and "404" in operation["responses"], path
        problem = operation["responses"]["401"]["content"]["application/problem+json"]
        assert problem["schema"]["$ref"].endswith("/ProblemDocument")
    for name in ("AgencyPublic", "AgencyCreated", "KeyRotated", "AgencyCreate"):
        assert document["components"]["schemas"][name]["examples"], name
    # The agency routes keep the agencies' scheme: neither credential is offered for the other.
    assert document["paths"]["/v1/keys"]["get"]["security"] == [{"HTTPBearer": []}]


def test_a_lookup_begun_before_a_change_here_is_neither_joined_nor_stored() -> None:
    async def run() -> tuple[list[str], Caller | None, Caller | None, Caller | None]:
        cache, release, calls = KeyCache(), asyncio.Event(), []

        async def stale() -> Caller:  # read before the disable committed
            calls.append("stale")
            await release.wait()
            return Caller(1, "so-a", "Sở A", 1)

        async def fresh() -> Caller:
            calls.append("fresh")
            return Caller(1, "so-a", "Sở A", 1, disabled=True)

        first = asyncio.ensure_future(cache.resolve("digest", stale))
        await asyncio.sleep(0)  # the stale lookup is under way
        cache.forget_agency(1)  # the disable was made in this process
        second = await cache.resolve("digest", fresh)  # a new lookup, not the stale one
        release.set()
        return calls, await first, second, cache.get("digest")

    calls, old, new, cached = asyncio.run(run())
    assert calls == ["stale", "fresh"]
    assert old is not None and not old.disabled  # the request concurrent with the change
    assert new is not None and new.disabled and cached == new  # the stale one was not stored


def test_the_same_slug_created_at_once_by_many_callers_is_one_201_and_409s(
    client: TestClient,
) -> None:
    """Check-then-insert races: the loser hits the unique index and must get a 409, not 500."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(8)

    def post(_: int) -> int:
        start.wait()
        body = {"name": "Sở Xây dựng", "slug": "so-xay-dung"}
        return client.post("/v1/admin/agencies", json=body, headers=OPERATOR).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(post, range(8)))
    assert statuses == [201] + [409] * 7


def test_a_guessable_operator_token_stops_the_start(tmp_path: Any) -> None:
    """The admin API is reachable wherever ingest is: a short token is refused at start-up,
    with how to make a good one, instead of opening the door."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 32 characters.*token_urlsafe"):
        make_settings(tmp_path, operator_token="admin")
    assert make_settings(tmp_path, operator_token="x" * 32).operator_token is not None
