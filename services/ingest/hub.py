"""`POST /hub`: the WebSub hub's subscription endpoint (W3C WebSub Recommendation, section 5.1).

Requests are form-encoded, as the spec says. Bad ones (an unknown topic, a callback that is
not http(s) or points into a private network) are refused at once with a 4xx; good ones get
`202 Accepted` and their intent is verified later by the `deliver` worker
(services/deliver/tasks.py), which calls the callback back.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from services.deliver.subscriptions import (
    MAX_CALLBACK_BYTES,
    MAX_SECRET_BYTES,
    MAX_TOPIC_BYTES,
    HubRequest,
    Mode,
    clamp_lease,
    listing_exists,
    record_request,
    refusal,
)
from services.deliver.topics import CallbackRefused, check_callback, parse_topic
from services.ingest.problems import Problem
from shared.celery_app import VERIFY_INTENT
from shared.db import session_factory
from shared.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["hub"])

FORM = "application/x-www-form-urlencoded"
FIELDS = ("hub.mode", "hub.topic", "hub.callback", "hub.lease_seconds", "hub.secret")


def invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        "Invalid subscription request",
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


def parse_form(body: bytes, public_url: str) -> HubRequest:
    """The request a form body asks for; raises a Problem naming the first bad field. Whether
    the topic's agency, category or document exists and where the callback resolves are
    checked after."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise Problem(400, "Bad request", f"The form is not valid UTF-8: {exc.reason}.") from None

    def one(name: str, required: bool = True) -> str | None:
        values = fields.get(name, [])
        if len(values) > 1:
            raise invalid(name, "given more than once")
        if not values or values[0] == "":
            if required:
                raise invalid(name, "required")
            return None
        return values[0]

    mode_text = one("hub.mode") or ""
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise invalid("hub.mode", "must be `subscribe` or `unsubscribe`") from None
    topic = one("hub.topic") or ""
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES or parse_topic(public_url, topic) is None:
        raise invalid("hub.topic", f"not a feed of this site (feeds are {public_url}/feeds/...)")
    callback = one("hub.callback") or ""
    if len(callback.encode("utf-8")) > MAX_CALLBACK_BYTES:
        raise invalid("hub.callback", f"longer than {MAX_CALLBACK_BYTES} bytes in UTF-8")
    lease_text = one("hub.lease_seconds", required=False)
    lease: int | None = None
    if lease_text is not None:
        if not lease_text.isascii() or not lease_text.isdigit() or len(lease_text) > 10:
            raise invalid("hub.lease_seconds", "must be a whole number of seconds")
        lease = int(lease_text)
    secret = one("hub.secret", required=False)
    if secret is not None and len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise invalid("hub.secret", f"must be less than {MAX_SECRET_BYTES + 1} bytes")
    return HubRequest(mode, topic, callback, clamp_lease(lease), secret)


def _topic_exists(settings: Settings, topic: str) -> bool:
    found = parse_topic(settings.public_url, topic)
    if found is None:
        return False
    with session_factory(settings)() as session:
        return listing_exists(session, found[0])


def _refusal(settings: Settings, form: HubRequest) -> str | None:
    with session_factory(settings)() as session:
        return refusal(session, form, settings.hub_max_per_topic, settings.hub_max_per_host)


def _database_problem(exc: SQLAlchemyError) -> Problem:
    """Any database error (not only a lost connection, which the app's handler answers):
    the client retries, superseding whatever this request left."""
    log.warning("hub: database error: %s", exc)
    return Problem(
        503, "Service unavailable", "The hub's database is unavailable; retry later."
    )  # _on_problem adds Retry-After to every 503


# Not in the agency API's OpenAPI document: the protocol is W3C WebSub's (the README's "Push
# (WebSub)" section documents it), its callers are subscribers, not agencies, and whether a
# well-formed request is accepted depends on the site's agencies and the callback's DNS,
# which no schema can state (the schema-driven tests would read those 422s as bugs).
@router.post("/hub", status_code=202, response_class=Response, include_in_schema=False)
async def hub(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM:
        raise Problem(415, "Unsupported media type", f"Send the request as {FORM}.")
    form = parse_form(await request.body(), settings.public_url)
    try:
        exists = await run_in_threadpool(_topic_exists, settings, form.topic)
    except SQLAlchemyError as exc:
        raise _database_problem(exc) from exc
    if not exists:
        raise invalid("hub.topic", "no such agency, category or document on this site")
    try:
        await run_in_threadpool(check_callback, form.callback, settings.hub_allow_private_callbacks)
    except CallbackRefused as exc:
        raise invalid("hub.callback", str(exc)) from None
    try:
        refused = await run_in_threadpool(_refusal, settings, form)
    except SQLAlchemyError as exc:
        raise _database_problem(exc) from exc
    if refused is not None:
        # 403, not 429: waiting does not help; an unsubscribe elsewhere (or an operator) does.
        raise Problem(403, "Subscription limit reached", f"Not subscribed: {refused}.")
    try:
        recorded = await run_in_threadpool(record_request, session_factory(settings), form)
    except SQLAlchemyError as exc:
        raise _database_problem(exc) from exc
    if recorded is not None:
        try:
            await run_in_threadpool(
                request.app.state.celery.send_task, VERIFY_INTENT, args=list(recorded)
            )
        except Exception as exc:  # Redis down: the client retries, superseding this request
            log.warning("hub: could not queue a verification: %s", exc)
            raise Problem(
                503,
                "Service unavailable",
                "The hub's queue is unavailable; retry later.",
                headers={"Retry-After": "5"},
            ) from exc
    return Response(status_code=202)
