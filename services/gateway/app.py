"""The public read side: serves the rendered site directory over HTTP.

A raw ASGI callable rather than a framework route: a request that hits the file cache does at
most one ``os.stat`` (none within ``REVALIDATE_AFTER`` of the last one, in production) and sends
prepared header lines, which is what lets a Python process get within reach of nginx (see the
speed guide; a framework's static-file handler is ~30x slower). Within reach, not level: on a
cache hit our own code is now ~2 % of a worker's time, uvicorn's two socket writes per response
and its event loop the rest, and nginx still answers about twice as many requests. Production
therefore puts nginx in front (``deploy/nginx.conf``) and this gateway behind it, for whatever
is not a plain file; ``python -m bench.gateway`` measures both.

A URL whose file is missing but whose tombstone exists (``shared.site.tombstone_for``: the
render worker's notice for a withdrawn bulletin) is answered ``410 Gone`` with that notice. The
live file always wins over a tombstone, and the tombstone directory, a dot-directory, is never
served under its own URL.

A subscription feed's answers (200, 304, HEAD) carry WebSub discovery ``Link`` headers (its hub
and its own URL), a month's archive document its own URL, and a past month's archive a day's
max-age: ``feed_extras`` in files.py.

Run: ``uvicorn --factory services.gateway.app:app_from_env --workers 2 --http httptools
--loop uvloop --no-access-log --no-proxy-headers --no-server-header`` (why each flag:
``GATEWAY_FLAGS`` in bench/gateway.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from redis import Redis
from starlette.types import Receive, Scope, Send

from services.deliver.topics import hub_url
from services.gateway.files import (
    NO_EXTRAS,
    SECURITY_HEADERS,
    Entry,
    Extras,
    FeedLinks,
    FileCache,
    HeaderList,
    Reply,
    Variant,
    feed_extras,
    http_date,
    load_entry,
)
from services.gateway.metrics import Tally, route_kind
from shared.filetypes import TOMBSTONE_TYPE, FileType, file_type
from shared.heartbeat import Heartbeat, new_beat
from shared.logs import configure_logging
from shared.metrics import exposition, metrics_url
from shared.settings import Settings, get_settings
from shared.site import TOMBSTONE_DIR

logger = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
# How long the production gateway (``app_from_env``) trusts a checked file without a new
# ``os.stat``. The stat was the largest cost in our own code on a cache hit (py-spy: 11 % of a
# worker's samples); skipping it on a busy URL measured about 5 µs, 12-15 %, less CPU per
# request (article page 38 -> 32 µs, 304 28 -> 25 µs, median of 5; no change for a 200 KiB
# feed, where writing the body dominates; uvicorn, 2 workers, wrk -c64). The price: a
# re-rendered, withdrawn or republished file is served at most this late. Ten milliseconds is
# nothing beside the render pipeline's own latency or the 30 s the pages' Cache-Control already
# allows, and a page not in the cache yet (a new bulletin) is looked up at once, never delayed.
REVALIDATE_AFTER = 0.010
# Larger files are streamed from disk, never held in memory (nor gzipped).
DEFAULT_MAX_ENTRY_BYTES = 16 * 1024 * 1024
# Reading, hashing and gzipping above this takes milliseconds: do it off the event loop.
THREAD_LOAD_BYTES = 1024 * 1024
STREAM_CHUNK_BYTES = 256 * 1024

_HEALTH_PATH = "/healthz"
_METRICS_PATH = "/metrics"
_ALLOW = b"GET, HEAD"
_HTML = b"text/html; charset=utf-8"
_NOT_FOUND_PAGE = Path(__file__).with_name("404.html")
# The 404 page is styled by the site's stylesheet (the CSP allows no inline style).
_STATIC_DIR = Path(__file__).resolve().parents[1] / "render" / "static"
_SERVER_ERROR_PAGE = (
    '<!doctype html>\n<html lang="vi"><head><meta charset="utf-8">'
    "<title>Lỗi máy chủ</title></head><body><h1>Lỗi máy chủ</h1>"
    '<p>Đã có lỗi xảy ra. Vui lòng thử lại sau.</p><p><a href="/">Về trang chủ</a></p>'
    "</body></html>\n"
).encode()
_METHOD_PAGE = "Phương thức không được hỗ trợ. Chỉ dùng GET hoặc HEAD.\n".encode()
_ETAG_RE = re.compile(rb'"[^"]*"')


def static_version(directory: Path = _STATIC_DIR) -> str:
    """The ``?v=`` the pages put on their assets: the same formula as
    ``services.render.pages._static_version``, which the gateway does not import (it would
    bring Jinja and SQLAlchemy into every gateway process). Were the two ever to differ, the
    404 page would merely fetch its own copy of the stylesheet."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name[0] != "."):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:10]


def not_found_page() -> bytes:
    page = _NOT_FOUND_PAGE.read_text(encoding="utf-8")
    return page.replace("{static_version}", static_version()).encode()


@dataclass(slots=True)
class FileStream:
    """A file too large to cache, sent in chunks from an already-open handle."""

    headers: HeaderList
    handle: BinaryIO
    remaining: int
    status: int = 200


def _fixed(status: int, content_type: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> Reply:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
        *SECURITY_HEADERS,
    ]
    return Reply(status, headers, body)


def relative_path(path: str) -> str | None:
    """The site-relative file a decoded URL path names, or ``None`` if it may not be served.

    uvicorn has already percent-decoded the path, so ``%2f``, ``%2e`` and ``%00`` arrive here as
    ``/``, ``.`` and NUL. Any segment starting with a dot is refused: that covers ``.`` and
    ``..`` (no traversal) and the storage's ``.tmp-*`` files (no half-published pages). Empty
    segments are refused too, so a redirect can never be turned into ``//host`` (off-site).
    A ``.gz`` sibling (shared.storage) is refused as nginx refuses it: it is served only as
    the gzip form of its original.
    """
    if not path.startswith("/") or "\x00" in path or "\\" in path:
        return None
    parts = path[1:].split("/")
    if parts[-1] == "":
        parts[-1] = "index.html"
    for part in parts:
        if not part or part[0] == ".":
            return None
    if parts[-1].endswith(".gz"):  # a precompressed sibling is a form of its file, not a URL
        return None
    return "/".join(parts)


def accepts_gzip(value: bytes) -> bool:
    """Whether an Accept-Encoding value allows gzip (honouring ``q=0`` and ``*``)."""
    gzip_q: float | None = None
    star_q: float | None = None
    for item in value.split(b","):
        name, _, params = item.partition(b";")
        coding = name.strip().lower()
        if coding not in (b"gzip", b"x-gzip", b"*"):
            continue
        q = 1.0
        for param in params.split(b";"):
            key, _, number = param.partition(b"=")
            if key.strip().lower() == b"q":
                try:
                    q = float(number.strip())
                except ValueError:
                    q = 0.0
        if coding == b"*":
            star_q = q
        else:
            gzip_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 13.1.2: ``*`` or any listed tag equal to ours under weak comparison."""
    if if_none_match == etag:
        return True
    if if_none_match.strip() == b"*":
        return True
    # Weak comparison ignores the W/ prefix, so only the quoted opaque tags matter.
    return etag in _ETAG_RE.findall(if_none_match)


def request_conditions(
    headers: list[tuple[bytes, bytes]],
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """Accept-Encoding, If-None-Match and If-Modified-Since, in one pass over the headers."""
    accept_encoding = if_none_match = if_modified_since = None
    for name, value in headers:
        if name == b"accept-encoding":
            accept_encoding = value
        elif name == b"if-none-match":
            # Repeated header lines form one list (RFC 9110 5.3).
            if_none_match = value if if_none_match is None else if_none_match + b"," + value
        elif name == b"if-modified-since":
            if_modified_since = value
    return accept_encoding, if_none_match, if_modified_since


def is_fresh(
    if_none_match: bytes | None,
    if_modified_since: bytes | None,
    etag: bytes,
    mtime: int,
    last_modified: bytes,
) -> bool:
    """Whether the client's copy is current, i.e. the answer is a 304."""
    if if_none_match is not None:
        # With If-None-Match present, If-Modified-Since must be ignored (RFC 9110 13.2.2).
        return etag_matches(if_none_match, etag)
    if if_modified_since is not None:
        return not_modified_since(if_modified_since, mtime, last_modified)
    return False


def not_modified_since(if_modified_since: bytes, entry_mtime: int, last_modified: bytes) -> bool:
    if if_modified_since == last_modified:
        return True
    try:
        since = parsedate_to_datetime(if_modified_since.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # not an HTTP-date: the condition is ignored (RFC 9110 13.1.3)
    if since > time.time():
        return False  # a date in the future is invalid, and would pin a stale copy
    return entry_mtime <= since


def directory_redirect(scope: Scope, path: str) -> Reply:
    """``/bac-kan`` → 301 ``/bac-kan/``, its query kept (the caller found the index page)."""
    location = quote(path, safe="/-._~!$&'()*+,;=:@") + "/"
    query: bytes = scope.get("query_string", b"")
    target = location.encode("ascii") + (b"?" + query if query else b"")
    headers = [
        (b"location", target),
        (b"content-length", b"0"),
        (b"cache-control", b"public, max-age=3600"),
        *SECURITY_HEADERS,
    ]
    return Reply(301, headers)


class Gateway:
    """The ASGI application. One instance per worker process; its cache is per process."""

    def __init__(
        self,
        site_dir: Path,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        revalidate_after: float = 0.0,
        heartbeat: Heartbeat | None = None,
        links: FeedLinks | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = str(site_dir)
        self._root_prefix = self.root.rstrip("/") + "/"
        self._tombstone_prefix = self._root_prefix + TOMBSTONE_DIR + "/"
        self.cache = FileCache(
            cache_bytes, revalidate_after=revalidate_after, wall_clock=wall_clock
        )
        self.links = links  # the feeds' Link headers: none without
        self._wall_clock = wall_clock
        self.max_entry_bytes = max_entry_bytes
        # Browsers send a handful of distinct Accept-Encoding values: parse each once.
        self._gzip_ok: dict[bytes, bool] = {}
        self._not_found = _fixed(404, _HTML, not_found_page())
        allow = (b"allow", _ALLOW)
        self._method_not_allowed = _fixed(405, b"text/plain; charset=utf-8", _METHOD_PAGE, allow)
        self._server_error = _fixed(500, _HTML, _SERVER_ERROR_PAGE)
        self.tally = Tally()  # this process's request counts, flushed into the metrics
        self.heartbeat = heartbeat  # started and stopped with the server (lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            # The synchronous cache path first: no coroutine to create and await on a hit.
            reply: Reply | FileStream | None = self._from_cache(scope)
            if reply is None:
                reply = await self._handle(scope)
        except Exception:
            logger.exception("gateway failed on %s %r", scope.get("method"), scope.get("path"))
            reply = self._server_error
        if isinstance(reply, FileStream):
            try:
                await self._stream(reply, send)
            finally:
                self.tally.record(route_kind(scope["path"]), reply.status,
                                  time.perf_counter() - started)  # fmt: skip
            return
        # A copy, because middleware such as Starlette's edits header lists in place and these
        # lists are shared by every response for the same file version.
        headers = list(reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else reply.body
        await send({"type": "http.response.body", "body": body})
        self.tally.record(route_kind(scope["path"]), reply.status, time.perf_counter() - started)

    def _from_cache(self, scope: Scope) -> Reply | None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return self._method_not_allowed
        entry = self.cache.current(scope["path"])
        if entry is None:
            return None
        self.tally.hits += 1
        return self._serve(entry, scope)

    async def _handle(self, scope: Scope) -> Reply | FileStream:
        """Everything the cache cannot answer: health, redirects, 404s, 410s and first reads."""
        path: str = scope["path"]
        if path == _HEALTH_PATH:
            return self._health()
        if path == _METRICS_PATH:
            return await self._metrics()
        relative = relative_path(path)
        if relative is None:
            return self._not_found
        self.tally.misses += 1
        fs_path = self._root_prefix + relative
        try:
            info = os.stat(fs_path)
        except (OSError, ValueError):
            return await self._gone(scope, path, relative, fs_path)
        if stat.S_ISDIR(info.st_mode):
            return self._directory(scope, path, fs_path)
        real_path = self._inside(fs_path)
        if real_path is None or not stat.S_ISREG(info.st_mode):
            return self._not_found
        extras = feed_extras(relative, self.links, self._wall_clock())
        if info.st_size > self.max_entry_bytes:
            return self._open_stream(scope, real_path, relative, extras=extras)
        if info.st_size > THREAD_LOAD_BYTES:
            entry = await asyncio.to_thread(load_entry, fs_path, real_path, relative, extras=extras)
        else:
            entry = load_entry(fs_path, real_path, relative, extras=extras)
        if entry is None:
            # Deleted between the stat and the open: perhaps withdrawn this very moment.
            return await self._gone(scope, path, relative, fs_path)
        self.cache.put(path, entry)
        return self._serve(entry, scope)

    async def _gone(
        self, scope: Scope, path: str, relative: str, live_path: str
    ) -> Reply | FileStream:
        """The 410 for a missing file that has a tombstone; the plain 404 otherwise."""
        fs_path = self._tombstone_prefix + relative
        try:
            info = os.stat(fs_path)
        except (OSError, ValueError):
            return self._not_found
        real_path = self._inside(fs_path, self._tombstone_prefix)
        if real_path is None or not stat.S_ISREG(info.st_mode):
            return self._not_found
        if info.st_size > self.max_entry_bytes:
            return self._open_stream(scope, real_path, relative, status=410, kind=TOMBSTONE_TYPE)
        if info.st_size > THREAD_LOAD_BYTES:
            entry = await asyncio.to_thread(
                load_entry, fs_path, real_path, relative, live_path=live_path
            )
        else:
            entry = load_entry(fs_path, real_path, relative, live_path=live_path)
        if entry is None:
            return self._not_found
        self.cache.put(path, entry)
        return self._serve(entry, scope)

    def _serve(self, entry: Entry, scope: Scope) -> Reply:
        accept_encoding, if_none_match, if_modified_since = request_conditions(scope["headers"])
        variant: Variant = entry.identity
        if entry.gzip is not None and accept_encoding is not None:
            if self._accepts_gzip(accept_encoding):
                variant = entry.gzip
        if not entry.conditional:
            return variant.ok
        fresh = is_fresh(
            if_none_match, if_modified_since, variant.etag, entry.mtime, entry.last_modified
        )
        return variant.not_modified if fresh else variant.ok

    def _accepts_gzip(self, value: bytes) -> bool:
        known = self._gzip_ok.get(value)
        if known is None:
            known = accepts_gzip(value)
            if len(self._gzip_ok) >= 256:
                self._gzip_ok.clear()  # odd clients must not grow this without bound
            self._gzip_ok[value] = known
        return known

    def _inside(self, fs_path: str, prefix: str | None = None) -> str | None:
        """The symlink-free path of ``fs_path`` if it stays in ``prefix`` (default: the site
        dir) and is no dotfile below it."""
        prefix = prefix or self._root_prefix
        real = os.path.realpath(fs_path)
        if not real.startswith(prefix):
            return None
        if any(part.startswith(".") for part in real[len(prefix) :].split("/")):
            return None
        return real

    def _directory(self, scope: Scope, path: str, fs_path: str) -> Reply:
        """``/bac-kan`` → 301 ``/bac-kan/`` when it has an index page; never a listing."""
        index = fs_path + "/index.html"
        real = self._inside(index)
        if real is None or not os.path.isfile(real):
            return self._not_found
        return directory_redirect(scope, path)

    def _open_stream(
        self,
        scope: Scope,
        real_path: str,
        relative: str,
        *,
        status: int = 200,
        kind: FileType | None = None,
        extras: Extras = NO_EXTRAS,
    ) -> Reply | FileStream:
        try:
            handle = open(real_path, "rb")  # closed by _stream, or below when nothing is sent
        except OSError:
            return self._not_found
        try:
            info = os.fstat(handle.fileno())
            if kind is None:
                kind = file_type(relative)
                if extras.max_age is not None:
                    kind = kind._replace(max_age=extras.max_age)
            # Hashing hundreds of MiB per request is not an option: a stat-derived tag, as
            # nginx uses, still changes with every atomic replace (new inode and mtime).
            etag = b'"%x-%x-%x"' % (info.st_ino, info.st_size, info.st_mtime_ns)
            mtime = info.st_mtime_ns // 1_000_000_000
            last_modified = http_date(mtime)
            validators = [
                (b"etag", etag),
                (b"last-modified", last_modified),
                (b"cache-control", b"public, max-age=%d" % kind.max_age),
                *extras.headers,
            ]
            _, if_none_match, if_modified_since = request_conditions(scope["headers"])
            # Preconditions apply to a 200 only (RFC 9110 13.2.1): a 410 is never a 304.
            fresh = status == 200 and is_fresh(
                if_none_match, if_modified_since, etag, mtime, last_modified
            )
            headers = [
                (b"content-type", kind.content_type),
                (b"content-length", str(info.st_size).encode()),
                *validators,
                *SECURITY_HEADERS,
            ]
        except BaseException:
            handle.close()
            raise
        if fresh or scope["method"] == "HEAD":
            handle.close()
            return Reply(304, [*validators, *SECURITY_HEADERS]) if fresh else Reply(status, headers)
        return FileStream(headers, handle, info.st_size, status)

    async def _stream(self, stream: FileStream, send: Send) -> None:
        with stream.handle:
            await send(
                {"type": "http.response.start", "status": stream.status, "headers": stream.headers}
            )
            while stream.remaining > 0:
                chunk = await asyncio.to_thread(
                    stream.handle.read, min(STREAM_CHUNK_BYTES, stream.remaining)
                )
                if not chunk:
                    # Truncated under us: ending early makes the client see a short body
                    # against Content-Length, i.e. an error, rather than silently wrong bytes.
                    raise RuntimeError(f"file shrank while streaming ({stream.remaining} left)")
                stream.remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": stream.remaining > 0}
                )

    def _health(self) -> Reply:
        if os.path.isdir(self.root):
            return _fixed(200, b"application/json", b'{"status": "ok"}')
        problem = {
            "type": "about:blank",
            "title": "Site directory missing",
            "status": 503,
            "detail": "The rendered site directory does not exist or is not a directory.",
        }
        return _fixed(503, b"application/problem+json", json.dumps(problem).encode())

    async def _metrics(self) -> Reply:
        """Prometheus's scrape: this process's tallies first, then every process's metrics."""
        self.tally.flush()
        # Reading every worker's file in multiprocess mode is disk work: off the event loop.
        body, content_type = await asyncio.to_thread(exposition)
        return _fixed(200, content_type.encode(), body)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self.heartbeat is not None:
                        self.heartbeat.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.heartbeat is not None:
                        await asyncio.to_thread(self.heartbeat.stop)  # one Redis DELETE
                    self.tally.flush()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})


def create_app(
    settings: Settings,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    revalidate_after: float = 0.0,
) -> Gateway:
    """A gateway that, by default, re-checks every file on every request; the production
    factory below trusts a check for ``REVALIDATE_AFTER``. Its feeds' Link headers name
    ``settings.public_url`` and the hub on ingest, as the hub itself does. With
    ``settings.storage_url`` set it serves the bucket instead (services/gateway/objects.py)."""
    if settings.storage_url:
        from services.gateway.objects import S3Gateway
        from shared.storage import S3Storage

        return S3Gateway(
            # Two tries, not the workers' four: a reader should not wait out a long backoff.
            S3Storage.from_url(settings.storage_url, attempts=2),
            cache_bytes=cache_bytes,
            max_entry_bytes=max_entry_bytes,
            revalidate_after=revalidate_after,
            heartbeat=heartbeat_for(settings),
            links=FeedLinks(settings.public_url, hub_url(settings.resolved_ingest_url)),
        )
    return Gateway(
        settings.resolved_site_dir,
        cache_bytes=cache_bytes,
        max_entry_bytes=max_entry_bytes,
        revalidate_after=revalidate_after,
        heartbeat=heartbeat_for(settings),
        links=FeedLinks(settings.public_url, hub_url(settings.resolved_ingest_url)),
    )


def heartbeat_for(settings: Settings) -> Heartbeat | None:
    """The heartbeat `bantin status` sees this process by; None without Redis. The gateway
    only reads files, so it serves with no Redis configured, unreachable, or down."""
    try:
        url = settings.broker_url
    except RuntimeError:  # no BANTIN_REDIS_URL and no embedded Redis: nothing to beat to
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    try:
        redis = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    except ValueError as exc:
        logger.warning("no heartbeat: cannot use the Redis URL (%s)", exc)
        return None
    # Its own address, not the public URL: nginx in front does not pass /metrics.
    url = metrics_url(settings.gateway_host, settings.gateway_port)
    return Heartbeat(redis, new_beat("gateway", metrics_url=url))


def app_from_env() -> Gateway:
    """Zero-argument factory for ``uvicorn --factory``: settings from ``BANTIN_*``."""
    settings = get_settings()
    configure_logging(settings, "gateway")
    if settings.storage_url:
        from services.gateway.objects import S3_REVALIDATE_AFTER

        return create_app(settings, revalidate_after=S3_REVALIDATE_AFTER)
    return create_app(settings, revalidate_after=REVALIDATE_AFTER)
