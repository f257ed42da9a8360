"""Who is signed in, CSRF tokens, and the sign-in rate limit of the web console.

Sessions are server-side (shared/users.py keeps only the digest of the cookie's token); the
cookie is HttpOnly, SameSite=Lax, Path=/console, and Secure whenever the console is served
over https. Signed-in forms carry the session's own CSRF token; the anonymous ones (sign-in,
set password) a double-submit token: a random cookie that the form repeats.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import limits
from fastapi import Request, Response
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError

from shared.ratelimit import KEY_PREFIX, OUTAGE_PAUSE, REDIS_TIMEOUT, storage_url
from shared.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "bantin_console"
CSRF_COOKIE = "bantin_console_csrf"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
HOME = "/console/bulletins"
SIGN_IN = "/console/sign-in"
# A per-address budget this many times the per-address one: an office behind one address
# holds many clerks, but one address trying many e-mails is a guesser.
ADDRESS_FACTOR = 10


@dataclass(frozen=True)
class Viewer:
    """The signed-in user, as plain data (it crosses threads and outlives the DB session)."""

    token: str  # the raw cookie token
    csrf_token: str
    user_id: int
    email: str
    name: str | None
    agency_id: int
    agency_slug: str
    agency_name: str

    @property
    def display_name(self) -> str:
        return self.name or self.email


def _behind_proxy(request: Request) -> bool:
    """The peer is on a private or loopback address: a proxy of ours (nginx), whose
    X-Forwarded-* headers can be believed."""
    peer = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(peer).is_private
    except ValueError:
        return False


def secure_cookies(settings: Settings, request: Request) -> bool:
    """Secure when the console's public address or this request is https (also as the
    proxy in front saw it)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    return (
        settings.resolved_ingest_url.startswith("https:")
        or request.url.scheme == "https"
        or (forwarded == "https" and _behind_proxy(request))
    )


def set_cookie(
    response: Response, settings: Settings, request: Request, name: str, value: str,
    *, max_age: int | None = None,
) -> None:  # fmt: skip
    response.set_cookie(
        name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=secure_cookies(settings, request),
    )  # fmt: skip


def clear_cookie(response: Response, settings: Settings, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=secure_cookies(settings, request),
    )  # fmt: skip


def new_token() -> str:
    return secrets.token_urlsafe(32)


def anonymous_csrf(request: Request) -> tuple[str, bool]:
    """The double-submit token of this browser, and whether it is new (to be set)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(current) <= 100:
        return current, False
    return new_token(), True


def same_token(expected: str | None, given: object) -> bool:
    """Constant-time comparison of a form's token with the expected one."""
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def safe_next(value: object) -> str:
    """Where to go after signing in: only a local /console path, else the list."""
    if not isinstance(value, str) or not value.startswith("/console/") or "\\" in value:
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return HOME
    if any(ord(c) < 0x21 for c in value):
        return HOME
    return value


def client_address(request: Request) -> str:
    """The client's address. Behind a proxy on a private or loopback address (nginx in the
    compose network, or on the same host) the last X-Forwarded-For entry is the one that
    proxy added, so it is the real client; a directly connected client cannot forge it."""
    peer = request.client.host if request.client else "unknown"
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        last = forwarded.split(",")[-1].strip()
        if last and _behind_proxy(request):
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                pass
    return peer


@dataclass(frozen=True)
class Refusal:
    retry_after: int  # seconds until a failure leaves the window


class SignInLimiter:
    """Failed sign-ins per e-mail address (`rate`) and per client address (ten times `rate`),
    in Redis so every ingest process shares them (in memory without Redis).

    Only failures are counted; once either budget is spent every attempt is refused, a right
    password too, until the oldest failure leaves the moving window. Fail open while Redis
    errs (as shared/ratelimit.py does): argon2 still makes each guess slow."""

    def __init__(self, url: str | None, rate: str) -> None:
        storage: Storage
        if url is None:
            storage = MemoryStorage()
        else:
            storage = RedisStorage(
                url, key_prefix=KEY_PREFIX, socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
            )  # fmt: skip
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_email = limits.parse(rate)
        self._per_address = type(self._per_email)(
            self._per_email.amount * ADDRESS_FACTOR, self._per_email.multiples
        )
        self._paused_until = 0.0

    def _keys(self, email: str, address: str) -> list[tuple[limits.RateLimitItem, tuple[str, ...]]]:
        return [
            (self._per_email, ("sign-in", "email", email)),
            (self._per_address, ("sign-in", "address", address)),
        ]

    def check(self, email: str, address: str) -> Refusal | None:
        """A refusal if either budget is spent (nothing is counted here)."""
        if time.monotonic() < self._paused_until:
            return None
        try:
            for item, identity in self._keys(email, address):
                if not self._limiter.test(item, *identity):
                    stats = self._limiter.get_window_stats(item, *identity)
                    return Refusal(max(1, math.ceil(stats.reset_time - time.time())))
        except (RedisError, StorageError, OSError) as exc:
            self._pause(exc)
        return None

    def fail(self, email: str, address: str) -> None:
        """Count a failed attempt against both budgets."""
        if time.monotonic() < self._paused_until:
            return
        try:
            for item, identity in self._keys(email, address):
                self._limiter.hit(item, *identity)
        except (RedisError, StorageError, OSError) as exc:
            self._pause(exc)

    def _pause(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + OUTAGE_PAUSE
        log.warning("sign-in limits unavailable, not enforced for %.0f s: %r", OUTAGE_PAUSE, exc)


def sign_in_limiter(settings: Settings, state: object) -> SignInLimiter:
    """The process's limiter, made on first use."""
    found = getattr(state, "sign_in_limiter", None)
    if found is None:
        found = SignInLimiter(storage_url(settings.broker_url), settings.sign_in_rate_limit)
        setattr(state, "sign_in_limiter", found)  # noqa: B010 (a Starlette State)
    assert isinstance(found, SignInLimiter)
    return found
