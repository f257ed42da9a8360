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

import anyio
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
# The per-e-mail and per-address budgets, this many times the pair's: an office behind one
# address holds many clerks, and a clerk's e-mail is public, but one address trying many
# e-mails, or many addresses one e-mail, is a guesser.
WIDE_FACTOR = 10
# argon2 checks at once per process (about the cores): each takes ~64 MiB and ~0.1 s of CPU,
# and a burst of anonymous sign-ins must not take the thread pool the API's requests share.
ARGON2_AT_ONCE = 2


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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _behind_proxy(request: Request, trusted: tuple[Network, ...]) -> bool:
    """The peer is a named proxy, or on a private or loopback address: only whether cookies
    are Secure depends on this (a forged https there only makes cookies stricter)."""
    peer = request.client.host if request.client else ""
    if _within(peer, trusted):
        return True
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
        or (forwarded == "https" and _behind_proxy(request, settings.trusted_networks))
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


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, settings: Settings) -> bool:
    """The request comes from a page of the console itself, as the browser says it: its
    Sec-Fetch-Site, else its Origin (ingest's public address, or the request's own)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin", "").strip().lower()
    if not origin or origin == "null":
        return False
    own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    return origin in {_origin_of(settings.resolved_ingest_url), own}


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


def client_address(request: Request, trusted: tuple[Network, ...] = ()) -> str:
    """The client's address: the connecting peer, unless it is one of our proxies
    (BANTIN_TRUSTED_PROXIES); then the right-most X-Forwarded-For entry that is not itself a
    trusted proxy. Entries left of it were written by the client and are never believed."""
    peer = request.client.host if request.client else "unknown"
    if not _within(peer, trusted):
        return peer
    address = peer
    entries = ",".join(request.headers.getlist("x-forwarded-for")).split(",")
    for entry in reversed(entries):
        try:
            address = str(ipaddress.ip_address(entry.strip()))
        except ValueError:
            break  # garbage from a proxy we trust: the last address it vouched for stands
        if not _within(address, trusted):
            break
    return address


@dataclass(frozen=True)
class Refusal:
    retry_after: int  # seconds until a failure leaves the window


class SignInLimiter:
    """Sign-in attempts per (e-mail, client address) pair (`rate`), and ten times `rate` per
    e-mail address alone and per client address alone, in Redis so every ingest process
    shares them (in memory without Redis).

    Each attempt is taken from every budget before its password is checked (one atomic hit
    each), so simultaneous guesses cannot exceed them; a successful sign-in clears the
    pair's and the e-mail's count, so in effect only failures accumulate there. A stranger
    must spend the e-mail's whole (tenfold) budget, from ten addresses, to lock a clerk out.
    Fail open while Redis errs (as shared/ratelimit.py does): argon2 still makes each guess
    slow."""

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
        self._per_pair = limits.parse(rate)
        self._wide = type(self._per_pair)(
            self._per_pair.amount * WIDE_FACTOR, self._per_pair.multiples
        )
        self._paused_until = 0.0

    def _keys(self, email: str, address: str) -> list[tuple[limits.RateLimitItem, tuple[str, ...]]]:
        return [
            (self._per_pair, ("sign-in", "pair", email, address)),
            (self._wide, ("sign-in", "email", email)),
            (self._wide, ("sign-in", "address", address)),
        ]

    def take(self, email: str, address: str) -> Refusal | None:
        """Count this attempt against every budget, or a refusal once one is spent (the
        budgets before it in `_keys` have been charged: a refused attempt still counts)."""
        if time.monotonic() < self._paused_until:
            return None
        try:
            for item, identity in self._keys(email, address):
                if not self._limiter.hit(item, *identity):
                    stats = self._limiter.get_window_stats(item, *identity)
                    return Refusal(max(1, math.ceil(stats.reset_time - time.time())))
        except (RedisError, StorageError, OSError) as exc:
            self._pause(exc)
        return None

    def succeeded(self, email: str, address: str) -> None:
        """The right password: the pair's and the e-mail's attempts no longer count. (The
        address's do: one account of one's own must not reset a guesser's address.)"""
        if time.monotonic() < self._paused_until:
            return
        try:
            for item, identity in self._keys(email, address)[:2]:
                self._limiter.clear(item, *identity)
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


def argon2_limiter(state: object) -> anyio.CapacityLimiter:
    """The process's bound on simultaneous password hashing and checking (made in the loop)."""
    found = getattr(state, "argon2_limiter", None)
    if found is None:
        found = anyio.CapacityLimiter(ARGON2_AT_ONCE)
        setattr(state, "argon2_limiter", found)  # noqa: B010 (a Starlette State)
    assert isinstance(found, anyio.CapacityLimiter)
    return found
