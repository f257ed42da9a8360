"""Celery tasks of the deliver worker (queue `deliver`): intent verification and content
distribution for the WebSub hub.

One task per subscriber and change, run on a pool of threads (`bantin worker deliver`), so a
slow or dead subscriber holds up only its own task.
Failures retry with exponential backoff and full jitter (a Celery retry with a countdown) and
give up after a bounded time, recording the last error on the subscription.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
from datetime import datetime, timedelta
from functools import cache

import httpx
from celery import Task, shared_task

from services.deliver import subscriptions
from services.deliver.fanout import fan_out
from services.deliver.network import DeliveryTransport, deadline
from services.deliver.subscriptions import DeliveryStatus, Mode
from services.deliver.topics import (
    CONTENT_TYPES,
    CallbackRefused,
    check_callback,
    hub_url,
    link_header,
    parse_topic,
    signature,
)
from shared.celery_app import DELIVER_CONTENT, DELIVER_FANOUT, VERIFY_INTENT
from shared.db import session_factory
from shared.models import utcnow
from shared.settings import Settings, get_settings
from shared.site import Listing, file_for
from shared.storage import Storage, open_storage

log = logging.getLogger(__name__)

# Short: a subscriber that cannot answer in this long is retried later, not waited for.
# No pool timeout: waiting for one of our own connections (more threads than connections)
# is our limit, not the subscriber's failure.
TIMEOUT = httpx.Timeout(5.0, connect=3.0, pool=None)
# Backoff: 2, 4, 8 ... s capped at 2 min, each times a random factor in [0.5, 1]; 8 retries
# end within ~6 min of the first try (2+4+8+16+32+64+120+120 s at most).
DELIVERY_RETRIES = 8
VERIFY_RETRIES = 3
BACKOFF_BASE = 2.0
BACKOFF_CAP = 120.0
CHALLENGE_BYTES = 32
MAX_ECHO_BYTES = 1024  # a verification answer longer than this cannot be the challenge
MAX_DRAINED_BYTES = 64 * 1024  # of a push's answer, read to keep its connection alive
# Timeouts bound each read, not a whole answer: a callback trickling bytes is cut off after
# this long in all (services/deliver/network.py's `deadline`), and the attempt failed.
REQUEST_DEADLINE_SECONDS = 15.0
ECHO_DEADLINE_SECONDS = 10.0  # an intent check's whole answer
# Longer than one attempt can take (its deadline), with margin.
CLAIM_SECONDS = 30.0


_stores: dict[tuple[str, str], Storage] = {}
_stores_lock = threading.Lock()


def _site_storage(settings: Settings) -> Storage:
    """One store per process and location: an S3 client is costly to make, and the deliver
    pool's threads share it (boto3 clients are thread-safe)."""
    where = (settings.storage_url, str(settings.resolved_site_dir))
    with _stores_lock:
        store = _stores.get(where)
        if store is None:
            store = _stores[where] = open_storage(settings)
    return store


@cache
def client(allow_private: bool) -> httpx.Client:
    """The process's HTTP client, made on first use (in the pool process, after the fork):
    its TLS context (~10 ms to make) and kept-alive connections serve every delivery. It
    connects only to public addresses unless `allow_private` (the setting; tests)."""
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
    return httpx.Client(
        timeout=TIMEOUT,
        follow_redirects=False,
        # With a transport of its own, httpx reads no proxy from the environment: a proxy
        # would be connected to instead of the callback, defeating the address check.
        transport=DeliveryTransport(limits, allow_private),
    )


def backoff(retries: int) -> float:
    """Seconds before retry number `retries` + 1."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**retries)
    return ceiling * random.uniform(0.5, 1.0)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@shared_task(name=VERIFY_INTENT, bind=True, max_retries=VERIFY_RETRIES)
def verify_intent(self: Task, subscription_id: int, token: str) -> None:
    """GET the callback with a challenge; the request becomes effective only if it is
    echoed exactly with a 2xx."""
    settings = get_settings()
    sessions = session_factory(settings)
    request = subscriptions.pending(sessions, subscription_id, token)
    if request is None:
        return  # superseded by a newer request, or settled already
    try:
        check_callback(request.callback, settings.hub_allow_private_callbacks)
    except CallbackRefused as exc:
        subscriptions.settle(sessions, subscription_id, token, False, f"callback refused: {exc}")
        return
    challenge = secrets.token_urlsafe(CHALLENGE_BYTES)
    params = {"hub.mode": request.mode.value, "hub.topic": request.topic,
              "hub.challenge": challenge}  # fmt: skip
    if request.mode is Mode.SUBSCRIBE:
        params["hub.lease_seconds"] = str(request.lease_seconds)
    try:
        # httpx keeps the callback's own query and adds these (the spec asks for that).
        with (
            deadline(ECHO_DEADLINE_SECONDS),
            client(settings.hub_allow_private_callbacks).stream(
                "GET", request.callback, params=params
            ) as response,
        ):
            echoed = b""
            for chunk in response.iter_bytes():
                echoed += chunk
                if len(echoed) > MAX_ECHO_BYTES:
                    break
            status = response.status_code
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # A URL httpx refuses (checked above, but a backstop) fails the same way every time.
        if not isinstance(exc, httpx.InvalidURL) and self.request.retries < VERIFY_RETRIES:
            raise self.retry(countdown=backoff(self.request.retries)) from exc
        subscriptions.settle(sessions, subscription_id, token, False, _describe(exc))
        return
    confirmed = 200 <= status < 300 and echoed == challenge.encode("ascii")
    error = None if confirmed else f"HTTP {status}, challenge not echoed"
    settled = subscriptions.settle(sessions, subscription_id, token, confirmed, error)
    log.info("hub: %s of %s for %s: %s%s", request.mode.value, request.topic,
             request.callback, "confirmed" if confirmed else "not confirmed",
             "" if settled else " (superseded)")  # fmt: skip


@shared_task(name=DELIVER_FANOUT, bind=True)
def fan_out_listing(self: Task, target: str, fingerprint: str) -> int:
    """A listing's feeds now show `fingerprint` (the feed build's one message): owe it to every
    live subscriber and queue their deliveries; how many. Idempotent: a repeat (a redelivered
    message, the reconciler's repair) owes nothing new to those who have it."""
    settings = get_settings()
    listing = Listing.from_target(target)
    return fan_out(session_factory(settings), self.app, settings.public_url, listing, fingerprint)


@shared_task(name=DELIVER_CONTENT, bind=True, max_retries=DELIVERY_RETRIES)
def deliver_content(self: Task, subscription_id: int, fingerprint: str) -> None:
    """POST the topic's current feed to one subscriber. `fingerprint` names the content that
    caused this task (for the logs); what is sent is the feed as it is now."""
    settings = get_settings()
    sessions = session_factory(settings)
    holder = str(self.request.id)  # the same across this task's retries
    # One round trip: what to send, and the subscriber's one slot taken for it.
    started = subscriptions.start_delivery(sessions, subscription_id, holder, _claim_until(0))
    if started is None:  # unsubscribed, expired, or this content reached it already
        return
    if started == subscriptions.BUSY:
        return  # another delivery to this subscriber is under way; it follows up if needed
    assert isinstance(started, subscriptions.Target)
    target = started
    found = parse_topic(settings.public_url, target.topic)
    if found is None:  # the public URL changed since it subscribed
        subscriptions.finish_delivery(sessions, subscription_id, holder, DeliveryStatus.FAILED,
                                      error="topic is not a feed here")  # fmt: skip
        return
    listing, fmt = found
    body = _site_storage(settings).get(file_for(listing.feed_path(fmt)))
    if body is None:
        subscriptions.release(sessions, subscription_id, holder)
        return  # never built: a build is what queues deliveries
    headers = {
        "Content-Type": CONTENT_TYPES[fmt],
        "Link": link_header(hub_url(settings.resolved_ingest_url), target.topic),
    }
    if target.secret:
        headers["X-Hub-Signature"] = signature(target.secret, body)
    try:
        check_callback(target.callback, settings.hub_allow_private_callbacks)
    except CallbackRefused as exc:
        subscriptions.finish_delivery(sessions, subscription_id, holder, DeliveryStatus.FAILED,
                                      error=f"callback refused: {exc}")  # fmt: skip
        return
    permanent = False
    try:
        with (
            deadline(REQUEST_DEADLINE_SECONDS),
            client(settings.hub_allow_private_callbacks).stream(
                "POST", target.callback, content=body, headers=headers
            ) as response,
        ):
            status = response.status_code
            # Nothing in the answer matters, but reading a small one to its end lets the
            # connection be kept alive for the next delivery (a new TCP and TLS handshake per
            # push was most of a push's network time); a big one is dropped, connection too.
            drained = 0
            for chunk in response.iter_raw():
                drained += len(chunk)
                if drained > MAX_DRAINED_BYTES:
                    break
        error = None if 200 <= status < 300 else f"HTTP {status}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = _describe(exc)
        permanent = isinstance(exc, httpx.InvalidURL)  # no retry can fix the URL
    if error is None:
        # One round trip: recorded, slot given back, and whether a newer change is owed.
        newer = subscriptions.finish_delivery(
            sessions, subscription_id, holder, DeliveryStatus.DELIVERED,
            delivered=target.wanted_fingerprint,
        )  # fmt: skip
        log.debug("hub: delivered %s (%s) to %s", target.topic, fingerprint[:12], target.callback)
        if newer is not None:  # a change came while this one was on its way
            self.app.send_task(DELIVER_CONTENT, args=[subscription_id, newer])
        return
    if not permanent and self.request.retries < DELIVERY_RETRIES:
        subscriptions.record_delivery(
            sessions, subscription_id, DeliveryStatus.RETRYING, error=error
        )
        countdown = backoff(self.request.retries)
        # Hold the slot through the wait: the retry sends whatever is newest then.
        subscriptions.claim(sessions, subscription_id, holder, _claim_until(countdown))
        raise self.retry(countdown=countdown)
    subscriptions.finish_delivery(sessions, subscription_id, holder, DeliveryStatus.FAILED,
                                  error=error)  # fmt: skip
    log.warning("hub: gave up delivering %s to %s: %s", target.topic, target.callback, error)


def _claim_until(wait: float) -> datetime:
    """When a claim lapses: after `wait` and one attempt (with margin). A worker killed while
    holding one frees the subscriber at that moment."""
    return utcnow() + timedelta(seconds=wait + CLAIM_SECONDS)
