"""The deliver queue in queue_stats (what `bantin status` and the metrics show), against a
real private Redis and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis

from services.deliver.subscriptions import (
    DeliveryStatus,
    HubRequest,
    Mode,
    owe_deliveries,
    record_delivery,
    record_request,
    settle,
)
from shared.celery_app import DELIVER_QUEUE, FEED_QUEUE, RENDER_QUEUE
from shared.db import create_schema, session_factory
from shared.models import Subscription, utcnow
from shared.queues import QueueStats, queue_lists, queue_stats
from shared.settings import Settings

TOPIC = "https://bantin.example.gov.vn/feeds/agency/so-noi-vu.atom"


@pytest.fixture
def settings(tmp_path: Path, private_redis: str) -> Settings:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    create_schema(settings)
    return settings


@pytest.fixture
def redis(private_redis: str) -> Iterator[Redis]:
    client = Redis.from_url(private_redis)
    client.flushdb()  # the module's own Redis: each test starts empty
    yield client
    client.close()


def deliver(settings: Settings, redis: Redis) -> QueueStats:
    stats = {s.queue: s for s in queue_stats(settings, redis)}
    assert list(stats) == [RENDER_QUEUE, FEED_QUEUE, DELIVER_QUEUE]
    return stats[DELIVER_QUEUE]


def test_deliver_depth_and_the_age_of_the_oldest_delivery_owed(
    settings: Settings, redis: Redis
) -> None:
    assert deliver(settings, redis) == QueueStats(DELIVER_QUEUE, 0, None)
    redis.rpush(DELIVER_QUEUE, "m1", "m2")
    redis.rpush(queue_lists(DELIVER_QUEUE)[1], "m3")
    redis.hset("unacked", "tag", "taken by a worker: not waiting")
    assert deliver(settings, redis).depth == 3

    sessions = session_factory(settings)
    request = HubRequest(Mode.SUBSCRIBE, TOPIC, "https://r.example.org/p", 3600, None)
    recorded = record_request(sessions, request)
    assert recorded is not None
    with sessions() as session:  # a verification waiting for 40 s
        session.query(Subscription).update({"updated_at": utcnow() - timedelta(seconds=40)})
        session.commit()
    age = deliver(settings, redis).oldest_age_seconds
    assert age is not None and 40 <= age < 3600
    assert settle(sessions, *recorded, confirmed=True)
    assert deliver(settings, redis).oldest_age_seconds is None  # settled, nothing owed

    with sessions() as session:  # a delivery owed for 90 s, not attempted yet
        owe_deliveries(session, [TOPIC], "fp-1", now=utcnow() - timedelta(seconds=90))
        session.commit()
    age = deliver(settings, redis).oldest_age_seconds
    assert age is not None and 90 <= age < 3600
    # Attempted and being retried: the subscriber's trouble, not work waiting for a worker.
    record_delivery(sessions, recorded[0], DeliveryStatus.RETRYING, error="ConnectError")
    assert deliver(settings, redis).oldest_age_seconds is None
