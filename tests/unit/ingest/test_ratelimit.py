"""Per-agency rate limits: the limiter on its own, then through the API on a private Redis.

Limits here are per minute, so that no assertion depends on how fast the machine is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from shared.embedded_redis import free_port, start_redis
from shared.ratelimit import ALLOWED, BATCH, WRITE, AgencyLimiter, storage_url
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem, auth_for, make_settings

BULLETIN = {"title": "Thông báo", "body": "Nội dung."}


@pytest.fixture
def redis_url(private_redis: str) -> str:
    redis.Redis.from_url(private_redis).flushdb()  # agency ids restart with every database
    return private_redis


def test_the_limit_passes_then_refuses_with_the_time_to_wait() -> None:
    limiter = AgencyLimiter("memory://", {WRITE: "3/minute"})
    assert [limiter.hit(WRITE, 1).allowed for _ in range(3)] == [True, True, True]
    refused = limiter.hit(WRITE, 1)
    assert not refused.allowed
    assert 1 <= refused.retry_after <= 60 and refused.limit == "3 per 1 minute"
    assert limiter.hit(WRITE, 2).allowed  # another agency has its own budget


def test_a_cost_above_the_whole_budget_is_charged_as_the_whole_budget() -> None:
    limiter = AgencyLimiter("memory://", {BATCH: "5/minute"})
    assert limiter.hit(BATCH, 1, cost=100).allowed  # else a batch this size could never pass
    assert not limiter.hit(BATCH, 1, cost=1).allowed


def test_two_processes_share_one_budget_in_redis(redis_url: str) -> None:
    first, second = (AgencyLimiter(redis_url, {WRITE: "4/minute"}) for _ in range(2))
    verdicts = [limiter.hit(WRITE, 7).allowed for limiter in (first, second) * 4]
    assert verdicts.count(True) == 4 and verdicts[:4] == [True] * 4


def test_a_dead_redis_lets_requests_through_and_is_not_asked_again_at_once() -> None:
    limiter = AgencyLimiter(f"redis://127.0.0.1:{free_port()}/0", {WRITE: "1/minute"})
    calls: list[Any] = []
    real_hit = limiter._limiter.hit

    def counting_hit(*args: Any, **kwargs: Any) -> bool:
        calls.append(args)
        return real_hit(*args, **kwargs)

    limiter._limiter.hit = counting_hit  # type: ignore[method-assign]
    assert [limiter.hit(WRITE, 1) for _ in range(3)] == [ALLOWED] * 3
    assert len(calls) == 1  # paused after the first failure: no timeout per request


def test_storage_urls_follow_the_broker() -> None:
    assert storage_url("redis://127.0.0.1:1234/0") == "redis://127.0.0.1:1234/0"
    assert storage_url("unix:///var/run/redis.sock") == "redis+unix:///var/run/redis.sock"
    assert storage_url("memory://") is None  # no Redis, nothing to share: no limits


# Through the API -------------------------------------------------------------------------


LIMITS = {"rate_limit": "3/minute", "batch_rate_limit": "5/minute"}


@pytest.fixture
def settings_overrides(redis_url: str) -> dict[str, Any]:
    return {"redis_url": redis_url, **LIMITS}


def assert_too_many(response: httpx.Response, limit: str) -> None:
    body = assert_problem(response, 429)
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= 60 and body["retry_after"] == wait
    assert body["limit"] == limit


def test_writes_over_the_limit_get_429_with_retry_after(
    client: TestClient, settings: Settings
) -> None:
    auth, other = auth_for(settings, "so-a"), auth_for(settings, "so-b")
    created = client.post("/v1/bulletins", json=BULLETIN, headers=auth)
    assert created.status_code == 202
    bulletin = f"/v1/bulletins/{created.json()['id']}"
    # A correction and a withdrawal are writes too: with the creation, the 3 allowed.
    assert (
        client.put(bulletin, json={**BULLETIN, "title": "Đính chính"}, headers=auth).status_code
        == 202
    )
    assert client.delete(bulletin, headers=auth).status_code == 202
    assert_too_many(client.post("/v1/bulletins", json=BULLETIN, headers=auth), "3 per 1 minute")
    assert_too_many(client.delete(bulletin, headers=auth), "3 per 1 minute")
    assert client.get(bulletin, headers=auth).status_code == 200  # reads are not limited
    assert client.post("/v1/bulletins", json=BULLETIN, headers=other).status_code == 202


def test_a_batch_is_charged_per_bulletin_from_its_own_budget(
    client: TestClient, settings: Settings
) -> None:
    auth = auth_for(settings, "so-c")

    def batch(size: int) -> Any:
        items = [{**BULLETIN, "title": f"Tin {i}"} for i in range(size)]
        return client.post("/v1/bulletins:batch", json={"bulletins": items}, headers=auth)

    assert batch(3).json()["accepted"] == 3
    assert_too_many(batch(3), "5 per 1 minute")  # 3 + 3 > 5: refused whole, nothing stored
    assert batch(2).json()["accepted"] == 2
    assert_too_many(batch(1), "5 per 1 minute")
    # The single-write budget is untouched by batches.
    assert client.post("/v1/bulletins", json=BULLETIN, headers=auth).status_code == 202


def test_a_batch_body_that_is_not_json_gets_its_4xx_not_a_crash(
    client: TestClient, settings: Settings
) -> None:
    auth = auth_for(settings, "so-f")
    for body in (b"[" * 100_000, b"not json", b'{"bulletins": [1, 2]}'):
        headers = {**auth, "Content-Type": "text/plain"}  # FastAPI leaves it unparsed
        answer = client.post("/v1/bulletins:batch", content=body, headers=headers)
        assert 400 <= answer.status_code < 500, answer.text


def test_two_ingest_processes_share_the_agency_limit(
    client: TestClient, settings: Settings
) -> None:
    auth = auth_for(settings, "so-d")
    with TestClient(create_app(settings), raise_server_exceptions=False) as second:
        apps = (client, second, client, second, client)
        answers = [
            app.post("/v1/bulletins", json=BULLETIN, headers=auth).status_code for app in apps
        ]
    assert answers == [202, 202, 202, 429, 429]


def test_redis_down_gives_503_for_writes_and_never_a_500(tmp_path: Path) -> None:
    process, url = start_redis(tmp_path / "redis")
    try:
        settings = make_settings(tmp_path, redis_url=url, **LIMITS)
        auth = auth_for(settings, "so-e")
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.post("/v1/keys", headers=auth).status_code == 201  # limiter in use
            process.terminate()
            process.wait(10)
            # Writes are refused by the queue check; key changes need no queue: they pass,
            # unlimited, instead of failing.
            refused = client.post("/v1/bulletins", json=BULLETIN, headers=auth)
            assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
            assert client.post("/v1/keys", headers=auth).status_code == 201
    finally:
        process.kill()
        process.wait(10)


def test_the_openapi_documents_429_for_key_changes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "429" in paths["/v1/keys"]["post"]["responses"]
    assert "429" in paths["/v1/keys/{key_id}"]["delete"]["responses"]
