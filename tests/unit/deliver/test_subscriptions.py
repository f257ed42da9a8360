"""The hub's subscription records: leases, compare-and-set verification, owed deliveries."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from celery import Celery
from sqlalchemy import event, insert
from sqlalchemy.orm import Session, sessionmaker

from services.deliver.resend import resend_overdue
from services.deliver.subscriptions import (
    DEFAULT_LEASE_SECONDS,
    MAX_LEASE_SECONDS,
    MIN_LEASE_SECONDS,
    DeliveryStatus,
    HubRequest,
    Mode,
    claim,
    clamp_lease,
    overdue,
    owe_deliveries,
    pending,
    record_delivery,
    record_request,
    release,
    settle,
    target,
    unverified,
)
from shared.celery_app import DELIVER_CONTENT, VERIFY_INTENT
from shared.db import create_schema, session_factory
from shared.models import Subscription, SubscriptionState, utcnow
from shared.settings import Settings

TOPIC = "https://bantin.example.gov.vn/feeds/agency/so-noi-vu.atom"
OTHER_TOPIC = "https://bantin.example.gov.vn/feeds/all.atom"
CALLBACK = "https://reader.example.org/push/1"


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    settings = Settings(data_dir=tmp_path, redis_url="memory://")
    create_schema(settings)
    return session_factory(settings)


def ask(mode: Mode, lease: int = 3600, secret: str | None = "s3cret", callback: str = CALLBACK,
        topic: str = TOPIC) -> HubRequest:  # fmt: skip
    return HubRequest(mode, topic, callback, lease, secret)


def row(sessions: sessionmaker[Session], subscription_id: int) -> Subscription:
    with sessions() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        session.expunge(found)
        return found


def subscribe(sessions: sessionmaker[Session], **kwargs: object) -> int:
    recorded = record_request(sessions, ask(Mode.SUBSCRIBE, **kwargs))  # type: ignore[arg-type]
    assert recorded is not None
    assert settle(sessions, *recorded, confirmed=True)
    return recorded[0]


def test_leases_are_clamped_to_what_the_hub_grants() -> None:
    assert clamp_lease(None) == DEFAULT_LEASE_SECONDS
    assert clamp_lease(1) == MIN_LEASE_SECONDS
    assert clamp_lease(10**9) == MAX_LEASE_SECONDS
    assert clamp_lease(7200) == 7200


def test_a_subscription_is_pending_until_confirmed_then_active_with_its_lease(
    sessions: sessionmaker[Session],
) -> None:
    recorded = record_request(sessions, ask(Mode.SUBSCRIBE, lease=3600))
    assert recorded is not None
    subscription_id, token = recorded
    assert row(sessions, subscription_id).state == SubscriptionState.PENDING
    assert pending(sessions, subscription_id, token) == pending(sessions, subscription_id, token)
    found = pending(sessions, subscription_id, token)
    assert found is not None and (found.mode, found.lease_seconds) == (Mode.SUBSCRIBE, 3600)
    assert pending(sessions, subscription_id, "not-the-token") is None

    before = utcnow()
    assert settle(sessions, subscription_id, token, confirmed=True)
    active = row(sessions, subscription_id)
    assert active.state == SubscriptionState.ACTIVE
    assert active.secret == "s3cret" and active.token is None and active.pending_mode is None
    assert active.expires_at is not None
    assert before + timedelta(seconds=3600) <= active.expires_at
    assert active.expires_at <= utcnow() + timedelta(seconds=3600)
    # Settled once: the same verification cannot apply twice.
    assert not settle(sessions, subscription_id, token, confirmed=True)


def test_resubscribing_renews_the_lease_and_takes_the_new_secret(
    sessions: sessionmaker[Session],
) -> None:
    subscription_id = subscribe(sessions, lease=600)
    first = row(sessions, subscription_id)
    recorded = record_request(sessions, ask(Mode.SUBSCRIBE, lease=7200, secret="new"))
    assert recorded is not None and recorded[0] == subscription_id  # the same (topic, callback)
    # Still active on its old lease and secret while the renewal is verified.
    waiting = row(sessions, subscription_id)
    assert (waiting.state, waiting.secret) == (SubscriptionState.ACTIVE, "s3cret")
    assert settle(sessions, *recorded, confirmed=True)
    renewed = row(sessions, subscription_id)
    assert renewed.secret == "new" and renewed.lease_seconds == 7200
    assert first.expires_at is not None and renewed.expires_at is not None
    assert renewed.expires_at >= first.expires_at + timedelta(seconds=7200 - 600)


def test_a_refused_renewal_keeps_the_live_subscription_but_a_refused_new_one_is_denied(
    sessions: sessionmaker[Session],
) -> None:
    subscription_id = subscribe(sessions)
    recorded = record_request(sessions, ask(Mode.SUBSCRIBE, secret="other"))
    assert recorded is not None
    assert settle(sessions, *recorded, confirmed=False, error="HTTP 404")
    kept = row(sessions, subscription_id)
    assert (kept.state, kept.secret, kept.last_error) == (
        SubscriptionState.ACTIVE, "s3cret", "HTTP 404",
    )  # fmt: skip

    fresh = record_request(sessions, ask(Mode.SUBSCRIBE, callback=CALLBACK + "/other"))
    assert fresh is not None
    assert settle(sessions, *fresh, confirmed=False)
    assert row(sessions, fresh[0]).state == SubscriptionState.DENIED


def test_unsubscribing_from_nothing_records_nothing(sessions: sessionmaker[Session]) -> None:
    assert record_request(sessions, ask(Mode.UNSUBSCRIBE)) is None
    with sessions() as session:
        assert session.query(Subscription).count() == 0


def test_a_late_verification_of_an_older_request_changes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    # Client A subscribes, client B unsubscribes the same pair, then A's check answers late.
    a = record_request(sessions, ask(Mode.SUBSCRIBE))
    b = record_request(sessions, ask(Mode.UNSUBSCRIBE))
    assert a is not None and b is not None and a[0] == b[0]
    assert pending(sessions, *a) is None
    assert not settle(sessions, *a, confirmed=True)
    assert row(sessions, a[0]).state == SubscriptionState.PENDING
    assert settle(sessions, *b, confirmed=True)
    assert row(sessions, a[0]).state == SubscriptionState.UNSUBSCRIBED


def test_interleaved_requests_from_several_clients_end_in_the_last_settled_one(
    sessions: sessionmaker[Session],
) -> None:
    settled: list[Mode] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(6):
                mode = rng.choice(list(Mode))
                recorded = record_request(sessions, ask(mode))
                if recorded is None:
                    continue
                with lock:  # the order in which settles land is the order recorded here
                    if settle(sessions, *recorded, confirmed=True):
                        settled.append(mode)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    # Seed 0's first request subscribes, so a row exists from the start of every run.
    record_request(sessions, ask(Mode.SUBSCRIBE))
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    with sessions() as session:
        rows = session.query(Subscription).all()
    assert len(rows) == 1  # one (topic, callback), however many clients
    final = rows[0]
    # The latest request always settles (nothing supersedes it), so nothing stays pending,
    # and the state is what the last successful settle made it.
    assert final.token is None and final.pending_mode is None
    assert settled
    expected = (
        SubscriptionState.ACTIVE
        if settled[-1] is Mode.SUBSCRIBE
        else SubscriptionState.UNSUBSCRIBED
    )
    assert final.state == expected


def test_deliveries_are_owed_to_live_subscribers_of_the_topics_only(
    sessions: sessionmaker[Session],
) -> None:
    live = subscribe(sessions)
    other_topic = subscribe(sessions, topic=OTHER_TOPIC)
    expired = subscribe(sessions, callback=CALLBACK + "/expired")
    gone = subscribe(sessions, callback=CALLBACK + "/gone")
    recorded = record_request(sessions, ask(Mode.UNSUBSCRIBE, callback=CALLBACK + "/gone"))
    assert recorded is not None and settle(sessions, *recorded, confirmed=True)
    with sessions() as session:
        found = session.get(Subscription, expired)
        assert found is not None
        found.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
        assert owe_deliveries(session, [TOPIC], "fp-1") == [live]
        session.commit()
    assert row(sessions, live).wanted_fingerprint == "fp-1"
    assert row(sessions, other_topic).wanted_fingerprint is None
    assert target(sessions, expired) is None  # an expired lease gets nothing
    assert target(sessions, gone) is None

    owed = target(sessions, live)
    assert owed is not None and (owed.secret, owed.wanted_fingerprint) == ("s3cret", "fp-1")
    record_delivery(sessions, live, DeliveryStatus.RETRYING, error="ConnectError")
    assert target(sessions, live) is not None  # still owed
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-1")
    assert target(sessions, live) is None  # a repeated task for the same content skips
    delivered = row(sessions, live)
    assert (delivered.last_delivery_status, delivered.last_error) == ("delivered", None)


class Recorder:
    """Stands in for the Celery app: records the tasks sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[object]]] = []

    def send_task(self, name: str, args: list[object]) -> None:
        self.sent.append((name, args))


def test_a_delivery_whose_message_was_lost_is_sent_again_once_overdue(
    sessions: sessionmaker[Session],
) -> None:
    live = subscribe(sessions)
    start = utcnow()
    with sessions() as session:
        assert owe_deliveries(session, [TOPIC], "fp-1", now=start) == [live]
        session.commit()
    owed_for, quiet = timedelta(seconds=30), timedelta(seconds=180)
    recorder = Recorder()
    celery = cast(Celery, recorder)

    # Not yet overdue; then overdue with no attempt at all: sent again, once.
    early, later = start + timedelta(seconds=29), start + timedelta(seconds=31)
    assert resend_overdue(sessions, celery, owed_for, now=early) == 0
    assert resend_overdue(sessions, celery, owed_for, now=later) == 1
    assert recorder.sent == [(DELIVER_CONTENT, [live, "fp-1"])]
    with sessions() as session:
        assert overdue(session, owed_for, quiet, now=later) == []  # re-armed: owed from now

    # A retry chain in progress (an attempt since it became owed, recently) is left alone.
    record_delivery(sessions, live, DeliveryStatus.RETRYING, error="ReadTimeout")
    attempt = utcnow()
    with sessions() as session:
        assert overdue(session, owed_for, quiet, now=attempt + owed_for * 2) == []
        # ... until it has been quiet for longer than any backoff: its message was lost.
        assert overdue(session, owed_for, quiet, now=attempt + quiet * 2) == [(live, "fp-1")]
        session.rollback()

    # Delivered: owed no more.
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-1")
    assert row(sessions, live).owed_since is None
    with sessions() as session:
        assert overdue(session, owed_for, quiet, now=utcnow() + quiet * 2) == []


def test_a_newer_change_stays_owed_after_an_older_one_is_delivered(
    sessions: sessionmaker[Session],
) -> None:
    live = subscribe(sessions)
    with sessions() as session:
        owe_deliveries(session, [TOPIC], "fp-1")
        session.commit()
    first_owed = row(sessions, live).owed_since
    with sessions() as session:
        owe_deliveries(session, [TOPIC], "fp-2")
        session.commit()
    assert row(sessions, live).owed_since == first_owed  # owed since the oldest change
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-1")
    still = row(sessions, live)
    assert still.owed_since == first_owed and target(sessions, live) is not None
    record_delivery(sessions, live, DeliveryStatus.FAILED, error="gave up")
    assert row(sessions, live).owed_since is None  # given up: owed afresh at the next change


def test_one_delivery_in_flight_per_subscriber(sessions: sessionmaker[Session]) -> None:
    live = subscribe(sessions)
    with sessions() as session:
        owe_deliveries(session, [TOPIC], "fp-1")
        session.commit()
    now = utcnow()
    until = now + timedelta(seconds=30)
    assert claim(sessions, live, "task-a", until, now=now)
    assert not claim(sessions, live, "task-b", until, now=now)  # steps aside
    assert claim(sessions, live, "task-a", until + timedelta(seconds=60), now=now)  # a retry
    # A claim whose holder died lapses.
    assert claim(sessions, live, "task-b", until, now=until + timedelta(seconds=61))
    assert release(sessions, live, "task-a") == "fp-1"  # not the holder: nothing released
    assert row(sessions, live).claimed_by == "task-b"

    # A newer change came while task-b delivered fp-1: releasing names it for a follow-up.
    with sessions() as session:
        owe_deliveries(session, [TOPIC], "fp-2")
        session.commit()
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-1")
    assert release(sessions, live, "task-b") == "fp-2"
    assert claim(sessions, live, "task-c", until, now=now)
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-2")
    assert release(sessions, live, "task-c") is None  # all delivered: no follow-up
    released = row(sessions, live)
    assert (released.claimed_by, released.claimed_until) == (None, None)


def test_a_verification_whose_message_was_lost_is_sent_again(
    sessions: sessionmaker[Session],
) -> None:
    recorded = record_request(sessions, ask(Mode.SUBSCRIBE))
    assert recorded is not None
    recorder = Recorder()
    celery = cast(Celery, recorder)
    soon = utcnow() + timedelta(seconds=30)
    assert resend_overdue(sessions, celery, timedelta(seconds=30), now=soon) == 0
    later = utcnow() + timedelta(minutes=3)
    assert resend_overdue(sessions, celery, timedelta(seconds=30), now=later) == 1
    assert recorder.sent == [(VERIFY_INTENT, list(recorded))]
    with sessions() as session:  # re-armed: not again on the next pass
        assert unverified(session, timedelta(minutes=2), now=later) == []
    assert settle(sessions, *recorded, confirmed=True)
    with sessions() as session:  # settled: nothing to verify
        assert unverified(session, timedelta(minutes=2), now=later + timedelta(hours=1)) == []


def test_a_rebuild_with_unchanged_content_owes_nothing(sessions: sessionmaker[Session]) -> None:
    live = subscribe(sessions)
    with sessions() as session:
        assert owe_deliveries(session, [TOPIC], "fp-1") == [live]
        session.commit()
    record_delivery(sessions, live, DeliveryStatus.DELIVERED, delivered="fp-1")
    with sessions() as session:  # `bantin rebuild`: the same content again
        assert owe_deliveries(session, [TOPIC], "fp-1") == []
        session.commit()
    assert row(sessions, live).owed_since is None
    with sessions() as session:  # so the reconciler never re-sends a no-op
        later = utcnow() + timedelta(hours=1)
        assert overdue(session, timedelta(seconds=30), timedelta(seconds=180), now=later) == []

    # A change reverted before it was delivered: back to what it has, nothing owed.
    with sessions() as session:
        assert owe_deliveries(session, [TOPIC], "fp-2") == [live]
        session.commit()
    assert row(sessions, live).owed_since is not None
    with sessions() as session:
        assert owe_deliveries(session, [TOPIC], "fp-1") == []
        session.commit()
    reverted = row(sessions, live)
    assert (reverted.wanted_fingerprint, reverted.owed_since) == ("fp-1", None)


def test_owing_many_subscribers_binds_a_few_parameters_not_one_per_subscriber(
    sessions: sessionmaker[Session],
) -> None:
    count = 3000
    expires = utcnow() + timedelta(hours=1)
    rows = [{"topic": TOPIC, "callback": f"{CALLBACK}/{n}", "state": SubscriptionState.ACTIVE,
             "expires_at": expires} for n in range(count)]  # fmt: skip
    with sessions() as session:
        session.execute(insert(Subscription), rows)
        session.commit()
    bound: list[int] = []

    def count_parameters(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        bound.append(len(parameters))

    with sessions() as session:
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", count_parameters)
        try:
            ids = owe_deliveries(session, [TOPIC], "fp-1")
            session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", count_parameters)
        assert len(ids) == count
        owed = session.query(Subscription).filter(
            Subscription.wanted_fingerprint == "fp-1", Subscription.owed_since.is_not(None)
        )
        assert owed.count() == count
    # An IN list of ids would bind `count` parameters (past ~32k subscribers: the limit).
    assert bound and max(bound) < 20
