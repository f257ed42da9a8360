"""FastAPI dependencies: settings, a database session, the calling agency (or operator), the
queue check, the rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from services.ingest.problems import Problem
from shared.agencies import hash_key, key_owner
from shared.db import session_factory
from shared.ratelimit import BATCH, WRITE, AgencyLimiter, storage_url
from shared.settings import Settings

# How long a process trusts a key it has looked up. A revoked (or deleted) key, or one of a
# disabled agency, stops working on every ingest process within this long, with no message to
# miss and whether Redis is up or not; the price is one indexed query per key in use, per
# process, twice a second.
KEY_CACHE_SECONDS = 0.5
QUEUE_CHECK_SECONDS = 1.0  # at most one Redis ping per second; a send failure is caught anyway


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="The agency's API key.")
_operator_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operators' token, `BANTIN_OPERATOR_TOKEN` (never an agency's key).",
)


@dataclass(frozen=True)
class Caller:
    """The authenticated agency and the key it called with, as plain data (cached)."""

    id: int
    slug: str
    name: str
    key_id: int
    disabled: bool = False  # the key is right, but an operator disabled the agency


class KeyCache:
    """Key digest → caller, each entry trusted for `ttl` seconds from the start of the lookup
    that made it (so a lookup racing a revocation is trusted no longer than `ttl` after it).
    Concurrent requests with the same key share one lookup.

    A change made in this process (revoke, rotate, disable) calls `forget*`, which also bumps
    an epoch: lookups begun before it are neither stored nor joined by later requests, so here
    the change holds at once for every request that starts after it."""

    def __init__(self, ttl: float = KEY_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._lookups: dict[str, tuple[asyncio.Task[tuple[Caller | None, float]], int]] = {}
        self._epoch = 0

    def get(self, digest: str) -> Caller | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    async def resolve(
        self, digest: str, lookup: Callable[[], Awaitable[Caller | None]]
    ) -> Caller | None:
        caller = self.get(digest)
        if caller is not None:
            return caller
        pending = self._lookups.get(digest)
        if pending is not None and pending[1] == self._epoch:
            task = pending[0]
        else:
            epoch = self._epoch
            task = asyncio.ensure_future(self._timed(lookup))
            self._lookups[digest] = (task, epoch)
            task.add_done_callback(lambda done: self._store(digest, done, epoch))
        # shield: a client that hangs up must not cancel the lookup others wait for.
        caller, _started = await asyncio.shield(task)
        return caller

    @staticmethod
    async def _timed(
        lookup: Callable[[], Awaitable[Caller | None]],
    ) -> tuple[Caller | None, float]:
        started = time.monotonic()
        return await lookup(), started

    def _store(
        self, digest: str, task: asyncio.Task[tuple[Caller | None, float]], epoch: int
    ) -> None:
        pending = self._lookups.get(digest)
        if pending is not None and pending[0] is task:
            del self._lookups[digest]
        if task.cancelled() or task.exception() is not None:
            return  # every waiter got the exception; the next request looks up again
        caller, started = task.result()
        if caller is None or epoch != self._epoch:  # begun before a change made here
            return
        if len(self._entries) > 10_000:  # bounded: a flood of keys cannot grow it
            self._entries.clear()
        self._entries[digest] = (caller, started + self.ttl)

    def forget(self, key_id: int) -> None:
        """Drop a key at once in this process (it was just revoked here)."""
        self._drop(lambda caller: caller.key_id == key_id)

    def forget_agency(self, agency_id: int) -> None:
        """Drop every key of an agency at once in this process (it was disabled or enabled
        here)."""
        self._drop(lambda caller: caller.id == agency_id)

    def _drop(self, matches: Callable[[Caller], bool]) -> None:
        # Called from a request's worker thread while the event loop uses the cache: the epoch
        # goes first, and entries are popped (another thread may have dropped them already).
        self._epoch += 1
        for digest, (caller, _expires) in list(self._entries.items()):
            if matches(caller):
                self._entries.pop(digest, None)


def _lookup(settings: Settings, key: str) -> Caller | None:
    with session_factory(settings)() as session:
        owner = key_owner(session, key)
    if owner is None:
        return None
    return Caller(owner.agency_id, owner.slug, owner.name, owner.key_id, owner.disabled)


async def get_agency(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401, "Unauthorized", "Send the agency's key as `Authorization: Bearer <key>`."
        )
    state = request.app.state
    key = credentials.credentials
    cache: KeyCache = state.key_cache
    caller = await cache.resolve(
        hash_key(key), lambda: run_in_threadpool(_lookup, state.settings, key)
    )
    if caller is None:
        raise Problem(401, "Unauthorized", "The API key is not valid (or was revoked).")
    if caller.disabled:
        # 403, not 401: the key is right, so the agency's developers need not hunt for another.
        raise Problem(
            403,
            "Agency disabled",
            f"The agency {caller.slug!r} was disabled by the operators of this Bantin: its key "
            "is valid but refused until they enable the agency again; ask them to. Its "
            "published bulletins stay online.",
            agency=caller.slug,
        )
    return caller


AgencyDep = Annotated[Caller, Depends(get_agency)]


async def get_writing_agency(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of a write: authenticated, the queue is up, and within its rate limit. One
    dependency instead of three: FastAPI's dependency solving was a fifth of ingest's CPU
    (profiled)."""
    caller = await get_agency(request, credentials)
    require_queue(request)
    await enforce_rate_limit(request, caller)
    return caller


WritingAgencyDep = Annotated[Caller, Depends(get_writing_agency)]


async def get_managing_agency(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The caller of a key change: authenticated and within its rate limit (no queue needed)."""
    caller = await get_agency(request, credentials)
    await enforce_rate_limit(request, caller)
    return caller


ManagingAgencyDep = Annotated[Caller, Depends(get_managing_agency)]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def require_operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)],
) -> None:
    """The caller holds BANTIN_OPERATOR_TOKEN. Without that setting the operators' API does not
    exist (404), so an installation that never set it exposes nothing."""
    settings: Settings = request.app.state.settings
    token = settings.operator_token.get_secret_value() if settings.operator_token else ""
    if not token:
        raise Problem(
            404,
            "Not found",
            "The operators' API is off on this server: set BANTIN_OPERATOR_TOKEN to turn it on.",
        )
    challenge = {"WWW-Authenticate": 'Bearer realm="bantin-operators"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "Unauthorized",
            "Send the operator token as `Authorization: Bearer <BANTIN_OPERATOR_TOKEN>`.",
            headers=challenge,
        )
    # Digests first: compare_digest takes constant time only between equal lengths.
    if not hmac.compare_digest(_digest(credentials.credentials), _digest(token)):
        raise Problem(
            401,
            "Unauthorized",
            "The operator token is not valid (an agency's key never is).",
            headers=challenge,
        )


def limiter(state: State) -> AgencyLimiter | None:
    """The process's limiter, made on first use (it connects to nothing until then); None
    without Redis."""
    if not hasattr(state, "limiter"):
        settings: Settings = state.settings
        url = storage_url(settings.broker_url)
        budgets = {WRITE: settings.rate_limit, BATCH: settings.batch_rate_limit}
        state.limiter = None if url is None else AgencyLimiter(url, budgets)
    found: AgencyLimiter | None = state.limiter
    return found


async def enforce_rate_limit(request: Request, caller: Caller) -> None:
    """One Redis round trip. A batch is charged one unit per bulletin of its own budget;
    FastAPI has parsed the body already, so counting its items costs no second parse."""
    limits = limiter(request.app.state)
    if limits is None:
        return
    budget, cost = WRITE, 1
    if request.url.path.endswith(":batch"):
        budget, cost = BATCH, await _batch_size(request)
    verdict = limits.hit(budget, caller.id, cost)
    if not verdict.allowed:
        what = "bulletins sent in batches" if budget == BATCH else "writes"
        raise Problem(
            429,
            "Too many requests",
            f"Over this agency's limit for {what} ({verdict.limit}); "
            f"retry after {verdict.retry_after} s.",
            headers={"Retry-After": str(verdict.retry_after)},
            limit=verdict.limit,
            retry_after=verdict.retry_after,
        )


async def _batch_size(request: Request) -> int:
    try:
        body = await request.json()  # starlette caches the parse FastAPI already made
    except (ValueError, RecursionError):  # not JSON after all: FastAPI will answer it
        return 1
    items = body.get("bulletins") if isinstance(body, dict) else None
    return max(1, len(items)) if isinstance(items, list) else 1


def require_queue(request: Request) -> None:
    """Refuse writes while Redis is unreachable: accepting would promise a publish we cannot
    start. (If Redis fails after this check, the committed row is re-sent by the reconciler.)"""
    state = request.app.state
    if state.redis is None or time.monotonic() - state.queue_ok_at < QUEUE_CHECK_SECONDS:
        return
    try:
        state.redis.ping()
    except RedisError as exc:
        raise Problem(
            503,
            "Service unavailable",
            "The publishing queue is unavailable; nothing was stored. Retry later.",
        ) from exc
    state.queue_ok_at = time.monotonic()
