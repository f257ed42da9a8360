"""The hub's subscription records: requests, their verification, and what is owed to whom.

Every (un)subscribe request gets a fresh random `token` and becomes the row's pending request;
its verification settles it only by a compare-and-set on that token. So when several clients
(or one client, quickly) ask for the same (topic, callback), the latest request wins, and an
older verification finishing late changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import cast
from urllib.parse import urlsplit

from sqlalchemy import Engine, Table, and_, case, func, null, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.models import (
    Agency,
    Category,
    LegalDocument,
    Subscription,
    SubscriptionState,
    utcnow,
)
from shared.site import Listing, ListingKind

# Leases the hub grants (W3C WebSub 5.1: the hub decides): asked-for values are clamped.
DEFAULT_LEASE_SECONDS = 10 * 24 * 3600
MIN_LEASE_SECONDS = 60
MAX_LEASE_SECONDS = 30 * 24 * 3600
MAX_SECRET_BYTES = 199  # the spec: "less than 200 bytes"
# In UTF-8 bytes, within the column sizes (in characters), and together well inside
# PostgreSQL's btree entry limit (~2704 bytes) on the unique (topic, callback) index.
MAX_TOPIC_BYTES = 500
MAX_CALLBACK_BYTES = 1000
ERROR_CHARS = 500  # of a recorded error
OVERDUE_BATCH = 1000  # re-sent deliveries per reconciler pass, at most


class Mode(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


class DeliveryStatus(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"  # gave up on this content; the next change is tried afresh


@dataclass(frozen=True)
class HubRequest:
    mode: Mode
    topic: str
    callback: str
    lease_seconds: int
    secret: str | None


@dataclass(frozen=True)
class Pending:
    """A request awaiting its intent verification."""

    mode: Mode
    topic: str
    callback: str
    lease_seconds: int


@dataclass(frozen=True)
class Target:
    """What one delivery needs."""

    topic: str
    callback: str
    secret: str | None
    wanted_fingerprint: str | None


def clamp_lease(asked: int | None) -> int:
    if asked is None:
        return DEFAULT_LEASE_SECONDS
    return max(MIN_LEASE_SECONDS, min(MAX_LEASE_SECONDS, asked))


def listing_exists(session: Session, listing: Listing) -> bool:
    if listing.kind is ListingKind.ALL:
        return True
    if listing.kind is ListingKind.DOCUMENT:
        # A document some revision has cited (its row is written with the first citation).
        found = select(LegalDocument.key).where(LegalDocument.key == listing.key)
        return session.scalar(found) is not None
    model = Agency if listing.kind is ListingKind.AGENCY else Category
    return session.scalar(select(model.id).where(model.slug == listing.key)) is not None


def refusal(
    session: Session,
    request: HubRequest,
    max_per_topic: int,
    max_per_host: int,
    now: datetime | None = None,
) -> str | None:
    """Why a subscribe request would exceed the hub's limits (None: it may go ahead). Counts
    subscriptions live or awaiting their verification; a request for a (topic, callback)
    that already has a row (a renewal, a re-subscription) is never refused, nor is an
    unsubscribe. A soft limit: two new requests at the same moment may both pass."""
    if request.mode is not Mode.SUBSCRIBE:
        return None
    now = now or utcnow()
    exists = session.scalar(
        select(Subscription.id).where(
            Subscription.topic == request.topic, Subscription.callback == request.callback
        )
    )
    if exists is not None:
        return None
    counted = or_(
        and_(Subscription.state == SubscriptionState.ACTIVE, Subscription.expires_at > now),
        Subscription.token.is_not(None),
    )
    on_topic = session.scalar(
        select(func.count()).where(Subscription.topic == request.topic, counted)
    )
    if (on_topic or 0) >= max_per_topic:
        return f"this feed has the most subscriptions the hub allows ({max_per_topic})"
    host = callback_host(request.callback)
    # A prefix narrows the scan to callbacks that may share the host; the host itself is
    # compared after parsing (ports, paths, case).
    literal = f"[{host}]" if ":" in host else host  # an IPv6 address, as URLs write it
    prefixes = [f"{scheme}://{_like_escape(literal)}%" for scheme in ("http", "https")]
    candidates = session.scalars(
        select(Subscription.callback).where(
            counted,
            or_(*(func.lower(Subscription.callback).like(p, escape="\\") for p in prefixes)),
        )
    )
    same_host = sum(1 for callback in candidates if callback_host(callback) == host)
    if same_host >= max_per_host:
        return f"callbacks on {host} have the most subscriptions the hub allows ({max_per_host})"
    return None


def callback_host(callback: str) -> str:
    """The callback's host name, lower case ("" if it has none)."""
    try:
        return (urlsplit(callback).hostname or "").lower()
    except ValueError:
        return ""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def record_request(sessions: sessionmaker[Session], request: HubRequest) -> tuple[int, str] | None:
    """Make `request` the pending one of its (topic, callback); returns the row id and the
    token its verification must present. None for an unsubscribe from nothing."""
    token = secrets.token_hex(16)
    pending = {
        "pending_mode": request.mode.value,
        "pending_lease": request.lease_seconds,
        "pending_secret": request.secret,
        "token": token,
        "updated_at": utcnow(),
    }
    for _ in range(3):  # an insert can lose to another client's insert of the same pair
        with sessions() as session:
            found = session.scalar(
                select(Subscription.id).where(
                    Subscription.topic == request.topic, Subscription.callback == request.callback
                )
            )
            if found is not None:
                session.execute(
                    update(Subscription).where(Subscription.id == found).values(pending)
                )
                session.commit()
                return found, token
            if request.mode is Mode.UNSUBSCRIBE:
                return None
            row = Subscription(
                topic=request.topic,
                callback=request.callback,
                state=SubscriptionState.PENDING,
                **pending,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                continue  # now it exists: supersede that request instead
            return row.id, token
    raise RuntimeError(f"could not record a request for {request.callback}")


def pending(sessions: sessionmaker[Session], subscription_id: int, token: str) -> Pending | None:
    """The request `token` names, if it is still the row's pending one."""
    with sessions() as session:
        row = session.get(Subscription, subscription_id)
        if row is None or row.token != token or row.pending_mode is None:
            return None
        return Pending(
            Mode(row.pending_mode), row.topic, row.callback, row.pending_lease or MIN_LEASE_SECONDS
        )


def settle(
    sessions: sessionmaker[Session],
    subscription_id: int,
    token: str,
    confirmed: bool,
    error: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Apply the outcome of a verification, only if `token` still names the pending request
    (compare-and-set). False: a newer request superseded it, nothing changed."""
    now = now or utcnow()
    with sessions() as session:
        row = session.get(Subscription, subscription_id)
        if row is None or row.token != token or row.pending_mode is None:
            return False
        values: dict[str, object] = {
            "pending_mode": None,
            "pending_lease": None,
            "pending_secret": None,
            "token": None,
            "updated_at": now,
            "last_error": None if confirmed else (error or "intent not confirmed")[:ERROR_CHARS],
        }
        mode = Mode(row.pending_mode)
        if confirmed and mode is Mode.SUBSCRIBE:
            lease = row.pending_lease or DEFAULT_LEASE_SECONDS
            values |= {
                "state": SubscriptionState.ACTIVE,
                "secret": row.pending_secret,
                "lease_seconds": lease,
                "expires_at": now + timedelta(seconds=lease),
            }
        elif confirmed:
            values |= {"state": SubscriptionState.UNSUBSCRIBED, "secret": None, "expires_at": None}
        elif mode is Mode.SUBSCRIBE and not _live(row, now):
            values["state"] = SubscriptionState.DENIED
        # A refused renewal leaves a live subscription on its old lease; a refused unsubscribe
        # leaves the row as it was.
        result = session.execute(
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.token == token)
            .values(values)
        )
        session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)


def _live(row: Subscription, now: datetime) -> bool:
    return (
        row.state == SubscriptionState.ACTIVE
        and row.expires_at is not None
        and row.expires_at > now
    )


def owe_deliveries(
    session: Session, topics: Sequence[str], fingerprint: str, now: datetime | None = None
) -> list[int]:
    """Mark `fingerprint` as owed to every live subscriber of `topics` that has not had it
    delivered; their ids. The caller commits."""
    now = now or utcnow()
    live = (
        Subscription.topic.in_(topics),
        Subscription.state == SubscriptionState.ACTIVE,
        Subscription.expires_at > now,
    )
    # A rebuild with unchanged content owes nothing: owing it anyway would leave owed_since
    # set with nothing to send, and the reconciler re-sending that no-op every pass.
    differs = or_(
        Subscription.delivered_fingerprint.is_(None),
        Subscription.delivered_fingerprint != fingerprint,
    )
    ids = list(
        session.scalars(select(Subscription.id).where(*live, differs).order_by(Subscription.id))
    )
    # Set-based, with the select's own WHERE: an IN list of every id would pass SQLite's and
    # psycopg's parameter limits (~32k) and fail the build after it wrote the feeds.
    unsynced = {"synchronize_session": False}  # the caller's objects expire at its commit
    session.execute(
        update(Subscription)
        .where(*live, differs)
        .values(wanted_fingerprint=fingerprint)
        .execution_options(**unsynced)
    )
    # Owed since the oldest undelivered change, not the newest.
    session.execute(
        update(Subscription)
        .where(*live, differs, Subscription.owed_since.is_(None))
        .values(owed_since=now)
        .execution_options(**unsynced)
    )
    # Back to what they have (a change reverted before it reached them): nothing owed.
    session.execute(
        update(Subscription)
        .where(*live, Subscription.delivered_fingerprint == fingerprint)
        .values(wanted_fingerprint=fingerprint, owed_since=None)
        .execution_options(**unsynced)
    )
    return ids


def clear_if_delivered(sessions: sessionmaker[Session], subscription_id: int) -> None:
    """Owe nothing if what is wanted is what was delivered (compare-and-set: a newer change
    owed meanwhile stays owed)."""
    with sessions() as session:
        session.execute(
            update(Subscription)
            .where(
                Subscription.id == subscription_id,
                Subscription.owed_since.is_not(None),
                Subscription.wanted_fingerprint == Subscription.delivered_fingerprint,
            )
            .values(owed_since=None)
        )
        session.commit()


def overdue(
    session: Session,
    owed_for: timedelta,
    quiet_for: timedelta,
    now: datetime | None = None,
    limit: int = OVERDUE_BATCH,
) -> list[tuple[int, str]]:
    """(id, owed fingerprint) of live subscribers owed a delivery for over `owed_for` with no
    attempt since it became owed, nor for `quiet_for` (longer than any retry's backoff): its
    message was lost. Re-arms them (owed from now), so each is reported once per `owed_for`.
    The caller commits, then sends them again."""
    now = now or utcnow()
    found = session.execute(
        select(Subscription.id, Subscription.wanted_fingerprint)
        .where(
            Subscription.state == SubscriptionState.ACTIVE,
            Subscription.expires_at > now,
            Subscription.owed_since < now - owed_for,
            Subscription.wanted_fingerprint.is_not(None),
            or_(
                Subscription.last_delivery_at.is_(None),
                Subscription.last_delivery_at < Subscription.owed_since,
                Subscription.last_delivery_at < now - quiet_for,
            ),
        )
        .order_by(Subscription.owed_since)
        .limit(limit)  # the oldest first; the rest on the next pass
        # Several reconcilers (one per host) take disjoint rows on PostgreSQL; SQLite has one.
        .with_for_update(skip_locked=True)
    ).all()
    ids = [row.id for row in found]
    if ids:
        session.execute(update(Subscription).where(Subscription.id.in_(ids)).values(owed_since=now))
    return [(row.id, str(row.wanted_fingerprint)) for row in found]


def unverified(
    session: Session,
    older_than: timedelta,
    now: datetime | None = None,
    limit: int = OVERDUE_BATCH,
) -> list[tuple[int, str]]:
    """(id, token) of requests still awaiting verification after `older_than` (longer than
    a verification's retries take): their message was lost. Re-arms them. The caller commits,
    then sends the verifications again."""
    now = now or utcnow()
    stale = (Subscription.token.is_not(None), Subscription.updated_at < now - older_than)
    found = session.execute(
        select(Subscription.id, Subscription.token)
        .where(*stale)
        .order_by(Subscription.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # as in overdue(): reconcilers take disjoint rows
    ).all()
    for row in found:  # compare-and-set: a newer request keeps its own clock
        session.execute(
            update(Subscription)
            .where(Subscription.id == row.id, Subscription.token == row.token)
            .values(updated_at=now)
        )
    return [(row.id, str(row.token)) for row in found]


def target(
    sessions: sessionmaker[Session], subscription_id: int, now: datetime | None = None
) -> Target | None:
    """What to deliver to a live subscriber that has not had the content owed to it yet;
    None when there is nothing to do (gone, unsubscribed, lease expired, delivered already)."""
    now = now or utcnow()
    with sessions() as session:
        row = session.get(Subscription, subscription_id)
        if row is None or not _live(row, now):
            return None
        if row.wanted_fingerprint is not None and row.wanted_fingerprint == (
            row.delivered_fingerprint
        ):
            return None
        return Target(row.topic, row.callback, row.secret, row.wanted_fingerprint)


def claim(
    sessions: sessionmaker[Session],
    subscription_id: int,
    holder: str,
    until: datetime,
    now: datetime | None = None,
) -> bool:
    """Take (or extend) the subscriber's one delivery slot for `holder` until `until`
    (compare-and-set); False while another holder's claim is still running."""
    now = now or utcnow()
    with sessions() as session:
        result = session.execute(
            update(Subscription)
            .where(
                Subscription.id == subscription_id,
                or_(
                    Subscription.claimed_by.is_(None),
                    Subscription.claimed_by == holder,
                    Subscription.claimed_until < now,
                ),
            )
            .values(claimed_by=holder, claimed_until=until)
        )
        session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)


def release(sessions: sessionmaker[Session], subscription_id: int, holder: str) -> str | None:
    """Give the slot back; the fingerprint still owed (newer than what was delivered), if
    any, for the holder to follow up on."""
    with sessions() as session:
        session.execute(
            update(Subscription)
            .where(Subscription.id == subscription_id, Subscription.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )
        session.commit()
        row = session.get(Subscription, subscription_id)
        if row is None or row.owed_since is None or row.wanted_fingerprint is None:
            return None
        return row.wanted_fingerprint


def record_delivery(
    sessions: sessionmaker[Session],
    subscription_id: int,
    status: DeliveryStatus,
    delivered: str | None = None,
    error: str | None = None,
) -> None:
    """`delivered`: the fingerprint now delivered (on success)."""
    values: dict[str, object] = {
        "last_delivery_status": status.value,
        "last_delivery_at": utcnow(),
        "last_error": None if error is None else error[:ERROR_CHARS],
    }
    if status is DeliveryStatus.DELIVERED:
        values["delivered_fingerprint"] = delivered
    if status is DeliveryStatus.FAILED:
        values["owed_since"] = None  # given up: the next change is owed afresh
    with sessions() as session:
        session.execute(
            update(Subscription).where(Subscription.id == subscription_id).values(values)
        )
        if status is DeliveryStatus.DELIVERED:
            # Nothing owed any more, unless a newer change came meanwhile.
            session.execute(
                update(Subscription)
                .where(
                    Subscription.id == subscription_id,
                    Subscription.wanted_fingerprint == delivered,
                )
                .values(owed_since=None)
            )
        session.commit()


BUSY = "busy"  # start_delivery: another delivery to this subscriber holds its slot
# The two calls every delivery makes, in SQL Core on a plain connection: the ORM's
# per-statement overhead was most of a delivery's CPU time (profiled), and a deliver worker
# is one process whose threads share one core's worth of Python.
_TABLE = cast(Table, Subscription.__table__)
_T = _TABLE.c


def _engine(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def start_delivery(
    sessions: sessionmaker[Session],
    subscription_id: int,
    holder: str,
    until: datetime,
    now: datetime | None = None,
) -> Target | str | None:
    """`target` and `claim` in one transaction (a delivery's first round trip): what to send,
    with the slot taken for `holder` until `until`; BUSY while another holder has it; None
    when there is nothing to do (and then nothing stays owed for it, as clear_if_delivered)."""
    now = now or utcnow()
    with _engine(sessions).begin() as conn:
        # The usual case in one statement: live, owed, slot free (or ours) -> taken.
        taken = conn.execute(
            update(_TABLE)
            .where(
                _T.id == subscription_id,
                _T.state == SubscriptionState.ACTIVE,
                _T.expires_at > now,
                or_(_T.wanted_fingerprint.is_(None), _T.delivered_fingerprint.is_(None),
                    _T.wanted_fingerprint != _T.delivered_fingerprint),
                or_(_T.claimed_by.is_(None), _T.claimed_by == holder, _T.claimed_until < now),
            )
            .values(claimed_by=holder, claimed_until=until)
            .returning(_T.topic, _T.callback, _T.secret, _T.wanted_fingerprint)
        ).first()  # fmt: skip
        if taken is not None:
            return Target(taken.topic, taken.callback, taken.secret, taken.wanted_fingerprint)
        # Else say why. Busy here while a holder releases meanwhile is safe: this content is
        # owed, so the releasing holder follows up with it.
        row = conn.execute(
            select(_T.topic, _T.callback, _T.secret, _T.state, _T.expires_at, _T.owed_since,
                   _T.wanted_fingerprint, _T.delivered_fingerprint)
            .where(_T.id == subscription_id)
        ).first()  # fmt: skip
        if row is None or not _live(row, now):  # type: ignore[arg-type]
            return None
        if row.wanted_fingerprint is not None and row.wanted_fingerprint == (
            row.delivered_fingerprint
        ):
            if row.owed_since is not None:  # else the reconciler would re-send a no-op
                conn.execute(
                    update(_TABLE)
                    .where(_T.id == subscription_id,
                           _T.wanted_fingerprint == _T.delivered_fingerprint)
                    .values(owed_since=None)
                )  # fmt: skip
            return None
        return BUSY


def finish_delivery(
    sessions: sessionmaker[Session],
    subscription_id: int,
    holder: str,
    status: DeliveryStatus,
    delivered: str | None = None,
    error: str | None = None,
) -> str | None:
    """`record_delivery` (a success or a given-up failure) and `release` in one transaction
    (a delivery's last round trip); the fingerprint still owed, if any, as `release`."""
    mine = _T.claimed_by == holder
    values: dict[str, object] = {
        "last_delivery_status": status.value,
        "last_delivery_at": utcnow(),
        "last_error": None if error is None else error[:ERROR_CHARS],
        # The slot back, if it is still ours (SET expressions read the row before the update).
        "claimed_by": case((mine, null()), else_=_T.claimed_by),
        "claimed_until": case((mine, null()), else_=_T.claimed_until),
    }
    if status is DeliveryStatus.DELIVERED:
        values["delivered_fingerprint"] = delivered
        # Nothing owed any more, unless a newer change came meanwhile.
        values["owed_since"] = case(
            (_T.wanted_fingerprint == delivered, null()), else_=_T.owed_since
        )
    if status is DeliveryStatus.FAILED:
        values["owed_since"] = None
    # One statement (SQLite >= 3.35 and PostgreSQL return the row as updated).
    with _engine(sessions).begin() as conn:
        owed = conn.execute(
            update(_TABLE)
            .where(_T.id == subscription_id)
            .values(values)
            .returning(_T.owed_since, _T.wanted_fingerprint)
        ).first()
    if owed is None or owed.owed_since is None or owed.wanted_fingerprint is None:
        return None
    return str(owed.wanted_fingerprint)
