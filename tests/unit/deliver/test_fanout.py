"""Fan-out off the feed worker, its repair when the message is lost, the purge of ended
subscriptions and the hub's limits (SQLite in a temp dir; Celery replaced by a recorder)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from services.deliver.fanout import fan_out, notify_subscribers
from services.deliver.resend import (
    FanoutWatch,
    lost_fanouts,
    purge_ended,
    repair_fanouts,
    resend_overdue,
)
from services.deliver.subscriptions import (
    DeliveryStatus,
    HubRequest,
    Mode,
    finish_delivery,
    record_delivery,
    record_request,
    refusal,
    settle,
    start_delivery,
)
from shared.celery_app import DELIVER_CONTENT, DELIVER_FANOUT
from shared.db import create_schema, session_factory
from shared.models import Subscription, SubscriptionState, utcnow
from shared.runtime import Runtime
from shared.settings import Settings
from shared.site import Listing, ListingKind

PUBLIC = "https://bantin.example.gov.vn"
LISTING = Listing(ListingKind.AGENCY, "so-noi-vu")
TOPIC = PUBLIC + "/feeds/agency/so-noi-vu.atom"
RSS_TOPIC = PUBLIC + "/feeds/agency/so-noi-vu.rss"
OTHER = PUBLIC + "/feeds/agency/so-y-te.atom"


class Recorder:
    """Stands in for the Celery app: records the tasks sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any], **_: Any) -> None:
        self.sent.append((name, args))

    @contextmanager
    def producer_or_acquire(self) -> Iterator[None]:
        yield None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, redis_url="memory://", public_url=PUBLIC)
    create_schema(settings)
    return settings


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    return session_factory(settings)


def subscribe(sessions: sessionmaker[Session], callback: str, topic: str = TOPIC) -> int:
    recorded = record_request(sessions, HubRequest(Mode.SUBSCRIBE, topic, callback, 3600, None))
    assert recorded is not None
    assert settle(sessions, *recorded, confirmed=True)
    return recorded[0]


def runtime(settings: Settings, celery: Recorder) -> Runtime:
    return cast(
        Runtime, SimpleNamespace(settings=settings, refresher=SimpleNamespace(celery=celery))
    )


def test_the_feed_build_sends_one_message_whatever_the_number_of_subscribers(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    recorder = Recorder()
    assert notify_subscribers(runtime(settings, recorder), LISTING, "fp-1") == 0
    assert recorder.sent == []  # nobody listens: no message at all

    ids = [subscribe(sessions, f"https://r{i}.example.org/push") for i in range(30)]
    ids.append(subscribe(sessions, "https://rss.example.org/push", RSS_TOPIC))
    subscribe(sessions, "https://other.example.org/push", OTHER)  # another listing
    assert notify_subscribers(runtime(settings, recorder), LISTING, "fp-1") == 1
    assert recorder.sent == [(DELIVER_FANOUT, ["agency:so-noi-vu", "fp-1"])]
    with sessions() as session:  # the feed job owed nothing itself
        assert session.query(Subscription).filter(Subscription.owed_since.isnot(None)).count() == 0

    # The deliver worker's half: owed in the database, then one delivery per subscriber.
    worker = Recorder()
    assert fan_out(sessions, cast(Celery, worker), PUBLIC, LISTING, "fp-1") == len(ids)
    assert worker.sent == [(DELIVER_CONTENT, [i, "fp-1"]) for i in ids]
    with sessions() as session:
        owed = {r.id: r.wanted_fingerprint for r in session.query(Subscription)
                if r.owed_since is not None}  # fmt: skip
    assert owed == dict.fromkeys(ids, "fp-1")
    # A repeated fan-out (a redelivered message) queues nothing: ten have the content, the
    # others have their delivery queued already.
    for sid in ids[:10]:
        record_delivery(sessions, sid, DeliveryStatus.DELIVERED, delivered="fp-1")
    again = Recorder()
    assert fan_out(sessions, cast(Celery, again), PUBLIC, LISTING, "fp-1") == 0
    # A new change: a task for each subscriber owed nothing before; a queued delivery sends
    # the feed as it is when it runs, so the others need none.
    assert fan_out(sessions, cast(Celery, again), PUBLIC, LISTING, "fp-2") == 10
    assert again.sent == [(DELIVER_CONTENT, [i, "fp-2"]) for i in ids[:10]]
    with sessions() as session:
        assert {r.wanted_fingerprint for r in session.query(Subscription).filter(
            Subscription.id.in_(ids))} == {"fp-2"}  # fmt: skip


def test_a_subscriber_being_delivered_to_gets_no_second_task_its_delivery_follows_up(
    sessions: sessionmaker[Session],
) -> None:
    free, held = (subscribe(sessions, f"https://r{i}.example.org/push") for i in range(2))
    fan_out(sessions, cast(Celery, Recorder()), PUBLIC, LISTING, "fp-1")
    record_delivery(sessions, free, DeliveryStatus.DELIVERED, delivered="fp-1")
    assert start_delivery(sessions, held, "task-a", utcnow() + timedelta(seconds=30)) is not None
    recorder = Recorder()
    assert fan_out(sessions, cast(Celery, recorder), PUBLIC, LISTING, "fp-2") == 1
    assert recorder.sent == [(DELIVER_CONTENT, [free, "fp-2"])]
    # The delivery under way (of fp-1) ends: fp-2 is still owed, so it follows up with it.
    newer = finish_delivery(sessions, held, "task-a", DeliveryStatus.DELIVERED, delivered="fp-1")
    assert newer == "fp-2"
    assert start_delivery(sessions, held, "task-b", utcnow() + timedelta(seconds=30)) is not None


def test_a_lost_fanout_is_repaired_once_the_mismatch_lasts(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    ids = [subscribe(sessions, f"https://r{i}.example.org/push") for i in range(3)]
    fan_out(sessions, cast(Celery, Recorder()), PUBLIC, LISTING, "fp-1")
    for sid in ids:
        record_delivery(sessions, sid, DeliveryStatus.DELIVERED, delivered="fp-1")
    built = {"agency:so-noi-vu": "fp-2"}  # a build wrote fp-2; its fan-out message was lost

    def last_built(listing: Listing) -> str | None:
        return built.get(listing.target)

    now, wait = utcnow(), timedelta(seconds=30)
    with sessions() as session:
        assert lost_fanouts(session, PUBLIC, last_built, now) == {("agency:so-noi-vu", "fp-2")}
    watch, recorder = FanoutWatch(), Recorder()
    celery = cast(Celery, recorder)
    # First seen now: a fan-out normally lands within milliseconds, so not yet.
    assert repair_fanouts(sessions, celery, PUBLIC, last_built, wait, now, watch) == 0
    assert recorder.sent == []
    later = now + wait
    # Lasted, but deliveries wait in the queue: the fan-out may be among them.
    waiting = repair_fanouts(sessions, celery, PUBLIC, last_built, wait, later, watch,
                             backlog=lambda: 5)  # fmt: skip
    assert waiting == 0 and recorder.sent == []
    assert repair_fanouts(sessions, celery, PUBLIC, last_built, wait, later, watch,
                          backlog=lambda: 0) == 3  # fmt: skip
    assert recorder.sent == [(DELIVER_CONTENT, [sid, "fp-2"]) for sid in ids]
    with sessions() as session:  # owed now, so the overdue re-sends also cover it
        assert lost_fanouts(session, PUBLIC, last_built, later) == set()
        assert all(r.owed_since is not None for r in session.query(Subscription))

    # A mismatch that resolves before it lasts (the build recorded after its fan-out) is
    # forgotten; Redis not knowing the build (None) repairs nothing: the feed is rebuilt.
    built["agency:so-noi-vu"] = "fp-3"
    assert repair_fanouts(sessions, celery, PUBLIC, last_built, wait, later, watch) == 0
    built["agency:so-noi-vu"] = "fp-2"
    assert repair_fanouts(sessions, celery, PUBLIC, last_built, wait, later + wait, watch) == 0
    built.clear()
    assert repair_fanouts(sessions, celery, PUBLIC, last_built, wait, later + 9 * wait, watch) == 0
    assert len(recorder.sent) == 3


def test_the_reconcilers_pass_repairs_fanouts(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    sid = subscribe(sessions, "https://r.example.org/push")
    fan_out(sessions, cast(Celery, Recorder()), PUBLIC, LISTING, "fp-1")
    record_delivery(sessions, sid, DeliveryStatus.DELIVERED, delivered="fp-1")
    recorder = Recorder()
    celery = cast(Celery, recorder)
    owed_for = timedelta(seconds=10)
    now = utcnow()
    for moment in (now, now + owed_for):
        resend_overdue(sessions, celery, owed_for, moment, settings=settings,
                       built=lambda listing: "fp-2")  # fmt: skip
    assert recorder.sent == [(DELIVER_CONTENT, [sid, "fp-2"])]


def test_ended_subscriptions_are_purged_after_the_grace_period(
    sessions: sessionmaker[Session],
) -> None:
    ids = {name: subscribe(sessions, f"https://{name}.example.org/push")
           for name in ("live", "gone", "denied", "expired", "renewing", "recent")}  # fmt: skip
    now = utcnow()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    changes: dict[str, dict[str, Any]] = {
        "gone": {"state": SubscriptionState.UNSUBSCRIBED, "updated_at": old},
        "denied": {"state": SubscriptionState.DENIED, "updated_at": old},
        "expired": {"expires_at": old},
        # Lease long over, but a renewal awaits its verification: kept.
        "renewing": {"expires_at": old, "token": "t", "pending_mode": "subscribe"},
        "recent": {"state": SubscriptionState.UNSUBSCRIBED, "updated_at": recent},
    }
    with sessions() as session:
        for name, values in changes.items():
            session.query(Subscription).filter_by(id=ids[name]).update(cast(Any, values))
        session.commit()
    with sessions() as session:
        assert purge_ended(session, 30, now) == 3
        session.commit()
    with sessions() as session:
        left = {r.id for r in session.query(Subscription)}
    assert left == {ids["live"], ids["renewing"], ids["recent"]}


def test_new_subscriptions_beyond_the_caps_are_refused_but_renewals_never(
    sessions: sessionmaker[Session],
) -> None:
    def ask(callback: str, topic: str = TOPIC, mode: Mode = Mode.SUBSCRIBE) -> HubRequest:
        return HubRequest(mode, topic, callback, 3600, None)

    def why(request: HubRequest) -> str | None:
        with sessions() as session:
            return refusal(session, request, max_per_topic=3, max_per_host=2)

    subscribe(sessions, "https://a.example.org/1")
    subscribe(sessions, "https://B.example.org:8443/1")
    # A pending request counts too (it becomes live once verified).
    assert record_request(sessions, ask("https://a.example.org/2")) is not None
    assert why(ask("https://a.example.org/3", OTHER)) is not None  # a.example.org: 2 already
    assert "a.example.org" in (why(ask("http://A.EXAMPLE.ORG/3", OTHER)) or "")
    assert why(ask("https://a.example.org.evil.test/1", OTHER)) is None  # another host
    assert why(ask("https://ab.example.org/1", OTHER)) is None
    refused = why(ask("https://c.example.org/1"))  # the topic has 3
    assert refused is not None and "(3)" in refused
    assert why(ask("https://a.example.org/1")) is None  # a renewal
    assert why(ask("https://c.example.org/1", mode=Mode.UNSUBSCRIBE)) is None
    with sessions() as session:  # ended subscriptions free their place
        session.query(Subscription).filter_by(callback="https://a.example.org/1").update(
            {"state": SubscriptionState.UNSUBSCRIBED}
        )
        session.commit()
    assert why(ask("https://c.example.org/1")) is None
