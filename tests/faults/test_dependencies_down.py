"""Fault 5 (and its Redis twin): a dependency down during ingest gives a 503 with
Retry-After and stores nothing; when it returns, service resumes by itself."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from shared.agencies import create_agency
from shared.db import create_schema, engine_for, session_scope
from shared.embedded_redis import free_port, start_redis
from shared.models import Base, Bulletin
from shared.settings import Settings
from shared.testing import wait_healthy
from tests.faults.proxy import CuttableProxy


@dataclass
class Ingest:
    url: str
    key: str
    settings: Settings  # direct access to the database, bypassing the proxy
    proxy: CuttableProxy
    redis: subprocess.Popen[bytes]
    redis_url: str
    redis_dir: Path

    def submit(self, title: str) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/bulletins", json={"title": title, "body": "Nội dung."},
                          headers={"Authorization": f"Bearer {self.key}"}, timeout=30)  # fmt: skip

    def rows(self) -> int:
        with session_scope(self.settings) as session:
            return int(session.scalar(select(func.count()).select_from(Bulletin)) or 0)

    def queued_messages(self) -> int:
        return int(redis.Redis.from_url(self.redis_url).llen("render"))


@pytest.fixture
def ingest(postgres_database: str, tmp_path: Path) -> Iterator[Ingest]:
    """Ingest alone (no workers, so queued messages stay countable), on PostgreSQL reached
    through a proxy the test can cut, and a private Redis the test can kill."""
    direct = Settings(data_dir=tmp_path, database_url=postgres_database)
    # The database is per session: start empty, version table included (the migrations
    # would otherwise find it at the newest revision and create nothing).
    Base.metadata.drop_all(engine_for(direct))
    with engine_for(direct).begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    create_schema(direct)
    with session_scope(direct) as session:
        _agency, key = create_agency(session, name="Sở Kế hoạch", slug="so-ke-hoach")
    url = make_url(postgres_database)
    proxy = CuttableProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    redis_process, redis_url = start_redis(tmp_path / "redis")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "BANTIN_DATA_DIR": str(tmp_path),
        "BANTIN_DATABASE_URL": url.set(host="127.0.0.1", port=proxy.port).render_as_string(False),
        "BANTIN_REDIS_URL": redis_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.ingest.app:app_from_env",
         "--port", str(port)],
        env=env, stdout=(tmp_path / "ingest.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    ingest = Ingest(f"http://127.0.0.1:{port}", key, direct, proxy, redis_process, redis_url,
                    tmp_path / "redis")  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", process, tmp_path / "ingest.log")
        yield ingest
    finally:
        process.terminate()
        process.wait(10)
        proxy.cut()
        ingest.redis.kill()  # the one running now: a test may have restarted it
        ingest.redis.wait()


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert "nothing was stored" in response.json()["detail"]


def test_database_down_is_503_with_nothing_stored_or_queued(ingest: Ingest) -> None:
    assert ingest.submit("Trước sự cố").status_code == 202
    assert (ingest.rows(), ingest.queued_messages()) == (1, 1)

    ingest.proxy.cut()
    for attempt in range(3):
        assert_unavailable(ingest.submit(f"Trong sự cố {attempt}"))
    assert (ingest.rows(), ingest.queued_messages()) == (1, 1)  # no row, no message
    assert httpx.get(f"{ingest.url}/healthz").status_code == 503

    ingest.proxy.start()  # the database is back: no restart, no operator
    assert ingest.submit("Sau sự cố").status_code == 202
    assert (ingest.rows(), ingest.queued_messages()) == (2, 2)
    assert httpx.get(f"{ingest.url}/healthz").status_code == 200


def test_redis_down_is_503_with_nothing_stored(ingest: Ingest) -> None:
    port = int(ingest.redis_url.rsplit(":", 1)[1].split("/")[0])
    ingest.redis.kill()
    ingest.redis.wait()
    assert_unavailable(ingest.submit("Hàng đợi hỏng"))
    assert ingest.rows() == 0

    ingest.redis, _ = start_redis(ingest.redis_dir, port)
    assert ingest.submit("Hàng đợi đã chạy lại").status_code == 202
    assert (ingest.rows(), ingest.queued_messages()) == (1, 1)
