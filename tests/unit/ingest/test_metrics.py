"""Ingest's /metrics: each answer counted once under its route template, the bulletin
counters, problems, rate-limit refusals, the log events about bulletins, multiprocess mode,
promtool's check, and the heartbeat."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from services.ingest.app import create_app
from services.ingest.problems import Problem
from shared.heartbeat import read_all
from shared.ratelimit import BATCH, WRITE, AgencyLimiter
from shared.settings import Settings
from tests.metrics import changes, promtool_problems, snapshot
from tests.unit.ingest.helpers import assert_problem, make_settings

ROOT = Path(__file__).resolve().parents[3]
BULLETIN = {"title": "Thông báo lịch tiếp công dân", "body": "Sở Nội vụ thông báo lịch."}


def requests(route: str, method: str, status: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return ("bantin_ingest_http_requests_total", labels)


def one(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def app_of(client: TestClient) -> FastAPI:
    assert isinstance(client.app, FastAPI)
    return client.app


needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool missing (Debian package prometheus; CI installs it)",
)


def test_metrics_answer_in_the_text_format_and_stay_out_of_the_openapi(
    client: TestClient,
) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"bantin_ingest_http_requests", "bantin_bulletins_accepted",
            "bantin_rate_limit_refusals"} <= names  # fmt: skip
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_a_request_counts_once_under_its_route_template(
    client: TestClient, auth: dict[str, str]
) -> None:
    before = snapshot("bantin_ingest_http_requests_total", "bantin_ingest_http_problems_total")
    assert_problem(client.get("/v1/bulletins/4242", headers=auth), 404)
    after = snapshot("bantin_ingest_http_requests_total", "bantin_ingest_http_problems_total")
    assert changes(before, after) == {
        requests("/v1/bulletins/{bulletin_id}", "GET", 404): 1.0,
        one("bantin_ingest_http_problems_total", status="404"): 1.0,
    }


def test_unknown_paths_and_methods_mint_no_new_label_values(client: TestClient) -> None:
    before = snapshot("bantin_ingest_http_requests_total")
    client.get("/wp-login.php")
    client.get("/v1/bulletins/1/../../etc/passwd")
    client.request("BREW", "/healthz")
    after = changes(before, snapshot("bantin_ingest_http_requests_total"))
    assert after == {
        requests("unmatched", "GET", 404): 2.0,
        requests("/healthz", "other", 405): 1.0,
    }


def test_latency_is_observed_per_route_template(client: TestClient) -> None:
    name = "bantin_ingest_http_request_duration_seconds_count"
    before = snapshot(name)
    client.get("/healthz")
    assert changes(before, snapshot(name)) == {one(name, method="GET", route="/healthz"): 1.0}


def test_accepted_replayed_corrected_and_withdrawn_bulletins_are_counted(
    client: TestClient, auth: dict[str, str]
) -> None:
    names = ("bantin_bulletins_accepted_total", "bantin_bulletin_corrections_total",
             "bantin_bulletin_withdrawals_total")  # fmt: skip
    before = snapshot(*names)
    headers = {**auth, "Idempotency-Key": "lich-1"}
    created = client.post("/v1/bulletins", json=BULLETIN, headers=headers)
    assert created.status_code == 202, created.text
    assert client.post("/v1/bulletins", json=BULLETIN, headers=headers).status_code == 202
    path = f"/v1/bulletins/{created.json()['id']}"
    corrected = {**BULLETIN, "title": "Thông báo lịch tiếp công dân (sửa)"}
    assert client.put(path, json=corrected, headers=auth).status_code == 202
    assert client.put(path, json=corrected, headers=auth).status_code == 202  # the same again
    assert client.delete(path, headers=auth).status_code == 202
    assert client.delete(path, headers=auth).status_code == 202
    assert changes(before, snapshot(*names)) == {
        one("bantin_bulletins_accepted_total", outcome="created"): 1.0,
        one("bantin_bulletins_accepted_total", outcome="replayed"): 1.0,
        one("bantin_bulletin_corrections_total", outcome="changed"): 1.0,
        one("bantin_bulletin_corrections_total", outcome="unchanged"): 1.0,
        one("bantin_bulletin_withdrawals_total", outcome="changed"): 1.0,
        one("bantin_bulletin_withdrawals_total", outcome="unchanged"): 1.0,
    }


def test_refused_submissions_and_batch_items_count_by_status_class(
    client: TestClient, auth: dict[str, str]
) -> None:
    names = ("bantin_bulletins_rejected_total", "bantin_bulletins_accepted_total")
    before = snapshot(*names)
    assert_problem(client.post("/v1/bulletins", json={"title": ""}, headers=auth), 422)
    assert_problem(client.post("/v1/bulletins", json=BULLETIN), 401)
    batch = {"bulletins": [BULLETIN, {"title": "thiếu nội dung"}]}
    answer = client.post("/v1/bulletins:batch", json=batch, headers=auth)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert changes(before, snapshot(*names)) == {
        one("bantin_bulletins_rejected_total", status_class="4xx"): 3.0,
        one("bantin_bulletins_accepted_total", outcome="created"): 1.0,
    }


def test_rate_limit_refusals_count_by_limit_kind(client: TestClient, auth: dict[str, str]) -> None:
    budgets = {WRITE: "1/minute", BATCH: "1/minute"}
    app_of(client).state.limiter = AgencyLimiter("memory://", budgets)
    name = "bantin_rate_limit_refusals_total"
    before = snapshot(name)
    assert client.post("/v1/bulletins", json=BULLETIN, headers=auth).status_code == 202
    assert_problem(client.post("/v1/bulletins", json=BULLETIN, headers=auth), 429)
    batch = {"bulletins": [BULLETIN]}
    assert client.post("/v1/bulletins:batch", json=batch, headers=auth).status_code == 200
    assert_problem(client.post("/v1/bulletins:batch", json=batch, headers=auth), 429)
    assert_problem(client.post("/v1/bulletins:batch", json=batch, headers=auth), 429)
    assert changes(before, snapshot(name)) == {
        one(name, limit="write"): 1.0,
        one(name, limit="batch"): 2.0,
    }


def test_server_side_problems_are_counted_and_logged_as_warnings(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def down() -> None:
        raise Problem(503, "Service unavailable", "The queue is down; nothing was stored.")

    app_of(client).add_api_route("/test-down", down)
    name = "bantin_ingest_http_problems_total"
    before = snapshot(name)
    with caplog.at_level(logging.WARNING, logger="services.ingest.problems"):
        assert_problem(client.get("/test-down"), 503)
    assert changes(before, snapshot(name)) == {one(name, status="503"): 1.0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "GET /test-down answered 503: The queue is down; nothing was stored."
    ]


def test_an_unexpected_error_counts_as_the_500_problem_it_becomes(client: TestClient) -> None:
    def broken() -> None:
        raise RuntimeError("bug")

    app_of(client).add_api_route("/test-broken", broken)
    names = ("bantin_ingest_http_requests_total", "bantin_ingest_http_problems_total")
    before = snapshot(*names)
    assert_problem(client.get("/test-broken"), 500)
    assert changes(before, snapshot(*names)) == {
        requests("/test-broken", "GET", 500): 1.0,
        one("bantin_ingest_http_problems_total", status="500"): 1.0,
    }


def test_each_change_is_logged_once_with_the_bulletin_context_and_no_key(
    client: TestClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="services.ingest.bulletins"):
        created = client.post("/v1/bulletins", json=BULLETIN, headers=auth).json()
        path = f"/v1/bulletins/{created['id']}"
        client.put(path, json={**BULLETIN, "title": "Lịch mới"}, headers=auth)
        client.delete(path, headers=auth)
    events = [r for r in caplog.records if r.name == "services.ingest.bulletins"]
    assert [(r.bulletin_id, r.agency, r.revision) for r in events] == [  # type: ignore[attr-defined]
        (created["id"], "so-noi-vu", 1),
        (created["id"], "so-noi-vu", 2),
        (created["id"], "so-noi-vu", 3),
    ]
    assert [r.getMessage().split(" ", 2)[2] for r in events] == [
        "created (queued)", "correction changed (queued)", "withdrawal changed (withdrawn)"
    ]  # fmt: skip
    key = auth["Authorization"].removeprefix("Bearer ")
    assert all(key not in record.getMessage() for record in caplog.records)


@needs_promtool
def test_promtool_accepts_the_exposition(client: TestClient, auth: dict[str, str]) -> None:
    client.post("/v1/bulletins", json=BULLETIN, headers=auth)
    client.get("/khong-co")
    assert promtool_problems(client.get("/metrics").content) == ""


# One ingest "worker" per process, as `uvicorn --workers 2` runs them: each answers a
# submission, then its /metrics must show every worker's submissions.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from services.ingest.app import create_app
    from tests.unit.ingest.helpers import auth_for, make_settings

    settings = make_settings(Path(sys.argv[1]))
    with TestClient(create_app(settings)) as client:
        auth = auth_for(settings, sys.argv[2])
        bulletin = {"title": "Thông báo", "body": "Nội dung."}
        assert client.post("/v1/bulletins", json=bulletin, headers=auth).status_code == 202
        sys.stdout.write(client.get("/metrics").text)
    """
)


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(ROOT)}
    outputs = []
    for worker in ("so-a", "so-b"):
        data = tmp_path / worker
        data.mkdir()
        done = subprocess.run([sys.executable, "-c", WORKER, str(data), worker], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert len(list(metrics_dir.glob("*.db"))) >= 2  # each worker wrote its own files

    def accepted(text: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = families["bantin_bulletins_accepted"].samples
        return sum(s.value for s in samples if s.labels.get("outcome") == "created")

    assert [accepted(text) for text in outputs] == [1.0, 2.0]
    if shutil.which("promtool"):
        assert promtool_problems(outputs[1].encode()) == ""


# -- the heartbeat --------------------------------------------------------------------------


@pytest.fixture
def redis_settings(tmp_path: Path, private_redis: str) -> Settings:
    return make_settings(tmp_path, redis_url=private_redis, ingest_port=18123)


def _beats(redis: Redis, role: str) -> list[Any]:
    return [beat for beat in read_all(redis) if beat.role == role]


def test_ingest_beats_while_it_runs_and_not_after(redis_settings: Settings) -> None:
    redis = Redis.from_url(redis_settings.broker_url)
    with TestClient(create_app(redis_settings)):
        deadline = time.monotonic() + 10
        while not _beats(redis, "ingest") and time.monotonic() < deadline:
            time.sleep(0.05)
        (beat,) = _beats(redis, "ingest")
        assert beat.pid == os.getpid()
        assert beat.metrics_url == "http://127.0.0.1:18123/metrics"
    assert _beats(redis, "ingest") == []  # a clean stop leaves no ghost


# -- the log format ---------------------------------------------------------------------------

# The production factory, JSON logs, one submission, and one line from uvicorn's own logger.
LOGGING = textwrap.dedent(
    """
    import logging
    import logging.config
    from fastapi.testclient import TestClient
    from uvicorn.config import LOGGING_CONFIG
    from services.ingest.app import app_from_env
    from shared.db import create_schema
    from shared.settings import get_settings
    from tests.unit.ingest.helpers import auth_for

    logging.config.dictConfig(LOGGING_CONFIG)  # what uvicorn does before the factory
    create_schema(get_settings())
    app = app_from_env()
    with TestClient(app) as client:
        auth = auth_for(get_settings(), "so-tu-phap")
        bulletin = {"title": "Thông báo", "body": "Nội dung."}
        assert client.post("/v1/bulletins", json=bulletin, headers=auth).status_code == 202
    logging.getLogger("uvicorn.error").info("uvicorn says hello")
    """
)


def test_the_factory_logs_json_lines_with_the_bulletin_and_uvicorn_in_them(tmp_path: Path) -> None:
    env = {**os.environ, "BANTIN_DATA_DIR": str(tmp_path), "BANTIN_REDIS_URL": "memory://",
           "BANTIN_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", LOGGING], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    accepted = [r for r in records if r["logger"] == "services.ingest.bulletins"]
    assert len(accepted) == 1, records
    assert accepted[0]["message"] == "bulletin 1 created (queued)"
    assert (accepted[0]["bulletin_id"], accepted[0]["agency"], accepted[0]["revision"]) == (
        1, "so-tu-phap", 1,
    )  # fmt: skip
    assert {r["process"] for r in records} == {"ingest"}
    assert any(r["logger"] == "uvicorn.error" and r["message"] == "uvicorn says hello"
               for r in records)  # fmt: skip
