"""Site files turned into ready-to-send responses, and the bounded cache that holds them.

A request that hits the cache costs one ``os.stat`` and a few comparisons: the body, its gzip
form, the validators and every header line are computed once per file version, when the file's
(mtime, size, inode) first differs from what the cache holds. The render and feed workers replace
files by atomic rename, so a new version always shows up as a new inode.

A withdrawn article's URL is answered from its tombstone (``shared.site.tombstone_for``) with
410 Gone. Such an entry also remembers the live path it stands in for: a hit stats that path
first (it must still be missing, since the live file always wins) and then the tombstone.

With ``revalidate_after`` > 0 an entry checked less than that long ago is served without a new
``os.stat``: a change on disk then shows up at most that late (a file not in the cache, such
as a newly published page, is always looked up at once). See ``REVALIDATE_AFTER`` in app.py.

Feeds say more than their type (``feed_extras``): a subscription feed names its WebSub hub and
its own URL in ``Link`` headers, an RFC 5005 archive document (a listing's month) its own URL,
and a past month's archive is cached for a day. deploy/nginx.conf says the same for the files
it serves itself.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import NamedTuple
from urllib.parse import quote

from services.deliver.topics import link_header
from shared.filetypes import (
    GZIP_LEVEL,
    GZIP_MAX_RATIO,
    MIN_GZIP_BYTES,
    TOMBSTONE_TYPE,
    FileType,
    file_type,
)
from shared.security_headers import SITE_HEADERS, raw_headers
from shared.site import absolute

# A month's archive once that month (UTC) is over: its entries no longer change but for a rare
# correction or withdrawal of an old bulletin, which a day's delay in caches is fair for.
ARCHIVE_MAX_AGE = 86_400
# ... but not on the first day of the next month: the month's last bulletins (a late embargo
# release, a build still coalescing, a clock a little ahead) may still be reaching it.
ARCHIVE_SETTLE_SECONDS = 86_400

HeaderList = list[tuple[bytes, bytes]]

# On every answer the gateway gives, 304s and errors included (values and reasons:
# shared/security_headers.py). A 304 carries them too: a cache that refreshes its stored
# headers from the 304 then never keeps a copy without them.
SECURITY_HEADERS: HeaderList = raw_headers(SITE_HEADERS)


# The subscription feeds (shared.site: Listing.feed_path) and their month archives (RFC 5005,
# "feeds/all/2026-11.rss", a big month's later parts "-2", "-3" ...), site-relative. The same
# patterns are in deploy/nginx.conf.
_LISTING = r"feeds/(?:all|agency/[^/]+|category/[^/]+|document/[^/]+)"
_FEED_PATH = re.compile(_LISTING + r"\.(?:rss|atom|json)")
_ARCHIVE_PATH = re.compile(_LISTING + r"/([0-9]{4}-[0-9]{2})(?:-[0-9]+)?\.(?:rss|atom)")
# What a URL path may carry unescaped (RFC 3986 pchar and "/"), as the redirects quote it.
_PATH_SAFE = "/-._~!$&'()*+,;=:@"


@dataclass(slots=True, frozen=True)
class FeedLinks:
    """The deployment's URLs the feeds' ``Link`` headers name: the site's public base URL
    (``settings.public_url``) and the WebSub hub (``services.deliver.topics.hub_url``)."""

    public_url: str
    hub: str


class Extras(NamedTuple):
    """What a file's answers carry beyond its type's defaults."""

    headers: HeaderList  # on the 200 and the 304 alike
    max_age: int | None = None  # instead of the type's
    # Wall-clock time (epoch seconds) from which these extras are out of date: the end of the
    # month for an archive of the current month, whose max-age then becomes a day.
    until: float | None = None


NO_EXTRAS = Extras([])


def month_of(now: float) -> tuple[str, float]:
    """The UTC month (``YYYY-MM``) at `now`, and the epoch second the next one starts."""
    moment = time.gmtime(now)
    year, month = moment.tm_year, moment.tm_mon
    following = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0, 0, 0, 0))
    return f"{year:04d}-{month:02d}", float(following)


def feed_extras(relative: str, links: FeedLinks | None, now: float) -> Extras:
    """Link headers and cache lifetime of a site-relative path (``NO_EXTRAS`` for anything
    but a feed or an archive document).

    A subscription feed gets ``Link: <hub>; rel="hub", <self>; rel="self"`` (W3C WebSub 4),
    self being exactly the topic URL the hub accepts for it; an archive document only its own
    URL (there is no subscribing to a closed month). An archive of a month before `now`'s (UTC)
    is cached for ``ARCHIVE_MAX_AGE`` from the second day of `now`'s month; the current
    month's, still growing (and every archive on a month's first day), as a feed is.
    Without `links` (a gateway given no URLs) no Link header is sent.
    """
    if not relative.startswith("feeds/"):
        return NO_EXTRAS
    if _FEED_PATH.fullmatch(relative):
        if links is None:
            return NO_EXTRAS
        topic = absolute(links.public_url, "/" + quote(relative, safe=_PATH_SAFE))
        return Extras([(b"link", link_header(links.hub, topic).encode())])
    match = _ARCHIVE_PATH.fullmatch(relative)
    if match is None:
        return NO_EXTRAS
    headers: HeaderList = []
    if links is not None:
        own = absolute(links.public_url, "/" + quote(relative, safe=_PATH_SAFE))
        headers.append((b"link", f'<{own}>; rel="self"'.encode()))
    current, next_month = month_of(now)
    if match.group(1) >= current:
        return Extras(headers, None, next_month)
    settled = _month_start(current) + ARCHIVE_SETTLE_SECONDS
    if now < settled:
        return Extras(headers, None, settled)
    return Extras(headers, ARCHIVE_MAX_AGE)


def _month_start(month: str) -> float:
    year, number = (int(part) for part in month.split("-"))
    return float(calendar.timegm((year, number, 1, 0, 0, 0, 0, 0, 0)))


@dataclass(slots=True, frozen=True)
class Reply:
    """A complete response. Header lists may be shared between requests: never mutate them."""

    status: int
    headers: HeaderList
    body: bytes = b""


@dataclass(slots=True, frozen=True)
class Variant:
    """One encoding of a file, with the 200 (or 410) and the 304 for it built in advance."""

    etag: bytes
    ok: Reply
    not_modified: Reply


@dataclass(slots=True, frozen=True)
class Entry:
    """A file version, identified by what ``os.stat`` reports for it."""

    fs_path: str  # the path the URL maps to, re-stat'ed on every hit
    mtime_ns: int
    size: int
    inode: int
    mtime: int  # whole seconds, as Last-Modified can say it
    last_modified: bytes
    identity: Variant
    gzip: Variant | None
    # Set on a tombstone: the live file this entry answers for while that file is missing.
    live_path: str | None = None
    # Wall-clock time from which the prepared headers are out of date (``Extras.until``).
    until: float | None = None
    # From an object store: the store's own ETag, which a conditional GET revalidates.
    source_tag: str | None = None

    @property
    def conditional(self) -> bool:
        """Whether If-None-Match / If-Modified-Since apply (only to a 200, RFC 9110 13.2.1)."""
        return self.identity.ok.status == 200

    @property
    def cost(self) -> int:
        return len(self.identity.ok.body) + (len(self.gzip.ok.body) if self.gzip else 0)


def _validator_headers(
    etag: bytes, last_modified: bytes, kind: FileType, vary: bool, extra: HeaderList
) -> HeaderList:
    headers = [
        (b"etag", etag),
        (b"last-modified", last_modified),
        (b"cache-control", b"public, max-age=%d" % kind.max_age),
        *extra,
    ]
    if vary:
        headers.append((b"vary", b"accept-encoding"))
    return headers


def _variant(
    body: bytes,
    etag: bytes,
    last_modified: bytes,
    kind: FileType,
    *,
    vary: bool,
    gzipped: bool,
    status: int,
    extra: HeaderList,
) -> Variant:
    validators = _validator_headers(etag, last_modified, kind, vary, extra)
    headers = [
        (b"content-type", kind.content_type),
        (b"content-length", str(len(body)).encode()),
        *validators,
        *SECURITY_HEADERS,
    ]
    if gzipped:
        headers.append((b"content-encoding", b"gzip"))
    return Variant(etag, Reply(status, headers, body), Reply(304, [*validators, *SECURITY_HEADERS]))


def http_date(seconds: int) -> bytes:
    return formatdate(seconds, usegmt=True).encode()


def load_entry(
    fs_path: str,
    real_path: str,
    relative: str,
    *,
    live_path: str | None = None,
    extras: Extras = NO_EXTRAS,
) -> Entry | None:
    """Read, hash and compress one file; ``None`` when it is gone or not a regular file.

    Reads ``real_path`` (the checked, symlink-free path) but keys the entry on what ``fs_path``
    stats to, so that any later change along the URL's path is noticed and re-checked.

    With ``live_path``, ``fs_path`` is the tombstone of that (missing) file: the entry answers
    410 Gone, as HTML, with a short max-age. `extras` (``feed_extras``) apply to a live file.
    """
    try:
        with open(real_path, "rb") as handle:
            # fstat of the open file: the key then describes exactly the bytes read, even if the
            # file is replaced between the caller's stat and this open.
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None
            body = handle.read()
    except OSError:
        return None
    return make_entry(
        body, relative, fs_path=fs_path, mtime_ns=info.st_mtime_ns, inode=info.st_ino,
        live_path=live_path, extras=extras,
    )  # fmt: skip


def make_entry(
    body: bytes,
    relative: str,
    *,
    fs_path: str,
    mtime_ns: int,
    inode: int = 0,
    live_path: str | None = None,
    extras: Extras = NO_EXTRAS,
    source_tag: str | None = None,
) -> Entry:
    """Hash and compress a file's bytes into an entry (``load_entry`` reads them from disk,
    the S3 gateway from the bucket): 410 with the tombstone type when ``live_path`` is set."""
    kind = TOMBSTONE_TYPE if live_path is not None else file_type(relative)
    status = 200 if live_path is None else 410
    if live_path is not None:
        extras = NO_EXTRAS
    elif extras.max_age is not None:
        kind = kind._replace(max_age=extras.max_age)
    mtime = mtime_ns // 1_000_000_000
    last_modified = http_date(mtime)
    digest = hashlib.blake2b(body, digest_size=10).hexdigest().encode()
    compressed: bytes | None = None
    if kind.compressible and len(body) >= MIN_GZIP_BYTES:
        # mtime=0: identical input gives identical gzip bytes in every worker process.
        compressed = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        if len(compressed) > len(body) * GZIP_MAX_RATIO:
            compressed = None
    vary = compressed is not None
    identity = _variant(
        body, b'"%s"' % digest, last_modified, kind,
        vary=vary, gzipped=False, status=status, extra=extras.headers,
    )  # fmt: skip
    gzip_variant = None
    if compressed is not None:
        # A distinct tag per encoding (RFC 9110 8.8.3): a cache must not pair a gzip body with
        # the identity tag, or a later 304 would let it serve bytes the client cannot decode.
        gz_etag = b'"%s-gz"' % digest
        gzip_variant = _variant(
            compressed, gz_etag, last_modified, kind,
            vary=True, gzipped=True, status=status, extra=extras.headers,
        )  # fmt: skip
    return Entry(
        fs_path=fs_path,
        mtime_ns=mtime_ns,
        size=len(body),
        inode=inode,
        mtime=mtime,
        last_modified=last_modified,
        identity=identity,
        gzip=gzip_variant,
        live_path=live_path,
        until=extras.until,
        source_tag=source_tag,
    )


class _Slot:
    """A cached entry, the moment until which it is served without a new check, and when
    its source last confirmed it (the S3 gateway bounds how long it serves it unchecked)."""

    __slots__ = ("entry", "valid_until", "checked_at")

    def __init__(self, entry: Entry, valid_until: float, checked_at: float) -> None:
        self.entry = entry
        self.valid_until = valid_until
        self.checked_at = checked_at


class FileCache:
    """Least-recently-used entries, bounded by the bytes they hold (bodies plus gzip forms).

    ``revalidate_after`` (seconds) is how long a checked entry is trusted without a new
    ``os.stat``; 0, the default, stats on every hit. ``wall_clock`` tells when an entry's
    ``until`` has passed (a month's end: ``clock`` is monotonic, not a calendar).
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        revalidate_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.revalidate_after = revalidate_after
        self.total_bytes = 0
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[str, _Slot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def current(self, key: str) -> Entry | None:
        """The cached entry for ``key`` if the file on disk is still that version (as of at
        most ``revalidate_after`` ago).

        A tombstone entry is current only while its live file is still missing, too.
        """
        slot = self._entries.get(key)
        if slot is None:
            return None
        now = self._clock()
        entry = slot.entry
        if now < slot.valid_until:
            self._entries.move_to_end(key)
            return entry
        if entry.until is not None and self._wall_clock() >= entry.until:
            self.discard(key)  # its month is over: read again, with the headers that now apply
            return None
        if entry.live_path is not None:
            try:
                os.stat(entry.live_path)
            except OSError:
                pass  # still withdrawn
            else:
                self.discard(key)  # republished: the live file wins
                return None
        try:
            info = os.stat(entry.fs_path)
        except OSError:
            self.discard(key)
            return None
        if (
            info.st_mtime_ns != entry.mtime_ns
            or info.st_size != entry.size
            or info.st_ino != entry.inode
        ):
            self.discard(key)
            return None
        slot.valid_until = now + self.revalidate_after
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        """Cache ``entry``, freshly read (so checked as of now)."""
        if entry.cost > self.max_bytes:
            return
        self.discard(key)
        now = self._clock()
        self._entries[key] = _Slot(entry, now + self.revalidate_after, now)
        self.total_bytes += entry.cost
        while self.total_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.total_bytes -= evicted.entry.cost

    def discard(self, key: str) -> None:
        slot = self._entries.pop(key, None)
        if slot is not None:
            self.total_bytes -= slot.entry.cost
