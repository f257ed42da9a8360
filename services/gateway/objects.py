"""The gateway serving from an S3-compatible bucket (``BANTIN_STORAGE_URL``) instead of the
site directory: the same answers (types, validators, 304, gzip, 404 page, 410 tombstones,
feed Link headers, directory redirects), from the same in-memory cache.

A cached entry is served without asking the bucket for ``revalidate_after`` seconds after it
was last checked; after that, the next request revalidates it with a conditional GET on the
store's own ETag (a 304 from the bucket costs no body). A URL not in the cache, such as a newly
published page, is always looked up at once: nothing is negatively cached. Concurrent requests
for the same URL share one lookup. boto3 is synchronous, so every bucket call runs in a thread,
off the event loop; the cache itself is only ever touched on the loop.

Bodies come whole into memory (no streaming from the bucket); one larger than
``max_entry_bytes`` is served but not cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from starlette.types import Scope

from services.gateway.app import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_MAX_ENTRY_BYTES,
    FileStream,
    Gateway,
    _fixed,
    directory_redirect,
    relative_path,
)
from services.gateway.files import (
    NO_EXTRAS,
    Entry,
    FeedLinks,
    FileCache,
    Reply,
    _Slot,
    feed_extras,
    make_entry,
)
from shared.filetypes import TOMBSTONE_MAX_AGE
from shared.heartbeat import Heartbeat
from shared.site import TOMBSTONE_DIR
from shared.storage import NOT_MODIFIED, Fetched, S3Storage

logger = logging.getLogger(__name__)

# How long the production gateway trusts a checked object before a conditional GET. Longer
# than the local REVALIDATE_AFTER: a bucket round trip costs a thread hop and a boto3 call
# (far more than an os.stat), and one per second per hot URL is negligible for the bucket. A
# correction or withdrawal reaches readers at most this late; a new page at once.
S3_REVALIDATE_AFTER = 1.0
# How long a cached object is served unchecked while the bucket does not answer: as long as
# any cache may keep a tombstone (TOMBSTONE_MAX_AGE), so a withdrawal made during an outage
# reaches readers no later than it would through a shared cache. Then: 503.
STALE_IF_ERROR_SECONDS = float(TOMBSTONE_MAX_AGE)

_HEALTH_PATH = "/healthz"
_METRICS_PATH = "/metrics"
_INDEX = "index.html"

# What a lookup found: an entry to serve (cached or not), a redirect, or nothing (404).
Found = Entry | Reply | None


class ObjectCache(FileCache):
    """The local cache's bounded LRU, revalidated against the bucket by the gateway instead
    of by ``os.stat`` (``current`` is never called on it)."""

    def fresh(self, key: str, wall_now: float) -> Entry | None:
        """The entry for ``key`` if it was checked within ``revalidate_after``."""
        slot = self._entries.get(key)
        if slot is None or self._clock() >= slot.valid_until:
            return None
        entry = slot.entry
        if entry.until is not None and wall_now >= entry.until:
            return None
        self._entries.move_to_end(key)
        return entry

    def stale(self, key: str) -> Entry | None:
        """The entry for ``key`` whatever its age (to revalidate)."""
        slot: _Slot | None = self._entries.get(key)
        return None if slot is None else slot.entry

    def touch(self, key: str, *, confirmed: bool = True) -> None:
        """Trust ``key``'s entry for another interval: the bucket confirmed it, or (with
        ``confirmed=False``) did not answer and the entry is served unchecked meanwhile."""
        slot = self._entries.get(key)
        if slot is not None:
            now = self._clock()
            slot.valid_until = now + self.revalidate_after
            if confirmed:
                slot.checked_at = now
            self._entries.move_to_end(key)

    def unchecked_for(self, key: str) -> float:
        """Seconds since the bucket last confirmed ``key``'s entry (infinite if none)."""
        slot = self._entries.get(key)
        return float("inf") if slot is None else self._clock() - slot.checked_at


class S3Gateway(Gateway):
    """The ASGI application over a bucket. One instance per worker process."""

    def __init__(
        self,
        store: S3Storage,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        revalidate_after: float = 0.0,
        heartbeat: Heartbeat | None = None,
        links: FeedLinks | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        # No site directory: every path-based method of the base class is overridden here.
        super().__init__(
            Path("/nonexistent"),
            cache_bytes=cache_bytes,
            max_entry_bytes=max_entry_bytes,
            revalidate_after=revalidate_after,
            heartbeat=heartbeat,
            links=links,
            wall_clock=wall_clock,
        )
        self.store = store
        self.cache: ObjectCache = ObjectCache(
            cache_bytes, revalidate_after=revalidate_after, wall_clock=wall_clock
        )
        self._lookups: dict[str, asyncio.Future[Found]] = {}
        self._unavailable = _fixed(
            503, b"application/problem+json", _UNAVAILABLE, (b"retry-after", b"5")
        )

    def _from_cache(self, scope: Scope) -> Reply | None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return self._method_not_allowed
        entry = self.cache.fresh(scope["path"], self._wall_clock())
        if entry is None:
            return None
        self.tally.hits += 1
        return self._serve(entry, scope)

    async def _handle(self, scope: Scope) -> Reply | FileStream:
        path: str = scope["path"]
        if path == _HEALTH_PATH:
            return await self._bucket_health()
        if path == _METRICS_PATH:
            return await self._metrics()
        relative = relative_path(path)
        if relative is None:
            return self._not_found
        try:
            found = await self._shared_lookup(path, relative)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("object store unavailable for %r: %s", path, exc)
            return self._unavailable
        if found is None:
            return self._not_found
        if isinstance(found, Reply):
            return found if found.status != 301 else directory_redirect(scope, path)
        return self._serve(found, scope)

    async def _shared_lookup(self, path: str, relative: str) -> Found:
        """One lookup per URL at a time: a burst of requests for a page that just expired
        makes one conditional GET, not one each."""
        lookup = self._lookups.get(path)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(path, relative))
            self._lookups[path] = lookup

            def forget(done: asyncio.Future[Found]) -> None:
                if self._lookups.get(path) is done:
                    del self._lookups[path]

            lookup.add_done_callback(forget)
        # Shielded: a client that hangs up must not cancel the lookup others are waiting on.
        return await asyncio.shield(lookup)

    async def _lookup(self, path: str, relative: str) -> Found:
        cached = self.cache.stale(path)
        if cached is not None:
            if cached.until is not None and self._wall_clock() >= cached.until:
                self.cache.discard(path)  # its month is over: read again with today's headers
            else:
                confirmed = True
                try:
                    renewed = await asyncio.to_thread(self._revalidate, relative, cached)
                except (BotoCoreError, ClientError) as exc:
                    # Stale if error (RFC 5861's idea): the last good copy beats a 503 while
                    # the bucket is away, but only for STALE_IF_ERROR_SECONDS: the page may
                    # have been withdrawn meanwhile, and a withdrawal must reach readers.
                    if self.cache.unchecked_for(path) > STALE_IF_ERROR_SECONDS:
                        self.cache.discard(path)
                        raise
                    logger.warning("serving %r unchecked: object store unavailable: %s", path, exc)
                    renewed, confirmed = cached, False
                if renewed is cached:
                    self.tally.hits += 1
                    self.cache.touch(path, confirmed=confirmed)
                    return cached
                self.cache.discard(path)
                if renewed is not None:
                    self._keep(path, renewed)
                    return renewed
        self.tally.misses += 1
        found = await asyncio.to_thread(self._read, relative)
        if isinstance(found, Entry):
            self._keep(path, found)
        return found

    def _keep(self, path: str, entry: Entry) -> None:
        if entry.size <= self.max_entry_bytes:
            self.cache.put(path, entry)

    # The methods below run in a worker thread: bucket calls only, never the cache.

    def _revalidate(self, relative: str, cached: Entry) -> Entry | None:
        """``cached`` itself if the bucket still holds that version, else what replaces it
        (``None``: look the URL up from scratch)."""
        if cached.live_path is not None:  # a tombstone: the live object wins once it is back
            if self.store.exists(relative):
                return None
            source = tombstone_of(relative)
        else:
            source = relative
        fetched = self.store.fetch(source, cached.source_tag)
        if fetched is NOT_MODIFIED:
            return cached
        if fetched is None:
            return None
        assert isinstance(fetched, Fetched)
        return self._entry(relative, fetched, tombstone=cached.live_path is not None)

    def _read(self, relative: str) -> Found:
        """The live object, else its tombstone (410), else a directory's redirect, else None."""
        fetched = self.store.fetch(relative)
        if isinstance(fetched, Fetched):
            return self._entry(relative, fetched, tombstone=False)
        gone = self.store.fetch(tombstone_of(relative))
        if isinstance(gone, Fetched):
            return self._entry(relative, gone, tombstone=True)
        if not relative.endswith("/" + _INDEX) and relative != _INDEX:
            if self.store.exists(f"{relative}/{_INDEX}"):
                return _REDIRECT
        return None

    def _entry(self, relative: str, fetched: Fetched, *, tombstone: bool) -> Entry:
        extras = NO_EXTRAS if tombstone else feed_extras(relative, self.links, self._wall_clock())
        return make_entry(
            fetched.body,
            relative,
            fs_path=relative,
            mtime_ns=int(fetched.last_modified) * 1_000_000_000,
            live_path=relative if tombstone else None,
            extras=extras,
            source_tag=fetched.etag,
        )

    async def _bucket_health(self) -> Reply:
        if await asyncio.to_thread(self.store.reachable):
            return _fixed(200, b"application/json", b'{"status": "ok"}')
        return self._unavailable


_UNAVAILABLE = json.dumps(
    {
        "type": "about:blank",
        "title": "Object store unreachable",
        "status": 503,
        "detail": "The bucket named by BANTIN_STORAGE_URL does not answer.",
    }
).encode()
# A marker for "a directory with an index page": the redirect itself needs the request.
_REDIRECT = Reply(301, [])


def tombstone_of(relative: str) -> str:
    """``shared.site.tombstone_for``'s file for a site-relative path."""
    return f"{TOMBSTONE_DIR}/{relative}"
