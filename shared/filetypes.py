"""What each site file is: its Content-Type, whether it compresses, and how long caches keep it.

One table for every place that hands a site file to someone else: the gateway's answers, the
object store's metadata (``shared.storage``), and the precompressed ``.gz`` siblings that
nginx serves by itself. deploy/nginx.conf repeats the same types and lifetimes.
"""

from __future__ import annotations

import gzip
import os
from typing import NamedTuple

# Below this, gzip saves less than the extra header and the client's inflate cost.
MIN_GZIP_BYTES = 512
# Keep the gzip form only when it is clearly smaller; already-dense text is not worth a Vary.
GZIP_MAX_RATIO = 0.9
# Level 1, as nginx's own gzip: a listing change rewrites nine feed files, and level 6
# measured 3x the CPU (0.70 vs 0.21 ms for a 160 KiB feed, 92 vs 33 µs for a 22 KiB page)
# for files only 10% (pages) to 26% (feeds) smaller. The gateway's in-memory copies use it
# too, so nginx's .gz and the gateway's gzip answers are the same bytes.
GZIP_LEVEL = 1

HTML_MAX_AGE = 30  # pages are re-rendered on corrections: keep stale copies short-lived
FEED_MAX_AGE = 60  # feed readers poll; a minute bounds how late an update can show
STATIC_MAX_AGE = 86_400  # templates reference assets with ?v=<hash>, so a new asset has a new URL
TOMBSTONE_MAX_AGE = 30  # a withdrawal must reach readers (and shared caches) quickly


class FileType(NamedTuple):
    content_type: bytes
    compressible: bool
    max_age: int


_UTF8 = b"; charset=utf-8"
_TYPES: dict[str, FileType] = {
    ".html": FileType(b"text/html" + _UTF8, True, HTML_MAX_AGE),
    ".htm": FileType(b"text/html" + _UTF8, True, HTML_MAX_AGE),
    ".rss": FileType(b"application/rss+xml" + _UTF8, True, FEED_MAX_AGE),
    ".atom": FileType(b"application/atom+xml" + _UTF8, True, FEED_MAX_AGE),
    ".xml": FileType(b"application/xml" + _UTF8, True, FEED_MAX_AGE),  # sitemaps among them
    ".opml": FileType(b"text/x-opml" + _UTF8, True, FEED_MAX_AGE),  # the feed lists
    ".json": FileType(b"application/json", True, FEED_MAX_AGE),
    ".css": FileType(b"text/css" + _UTF8, True, HTML_MAX_AGE),
    ".js": FileType(b"text/javascript" + _UTF8, True, HTML_MAX_AGE),
    ".mjs": FileType(b"text/javascript" + _UTF8, True, HTML_MAX_AGE),
    ".map": FileType(b"application/json", True, HTML_MAX_AGE),
    ".txt": FileType(b"text/plain" + _UTF8, True, HTML_MAX_AGE),
    ".svg": FileType(b"image/svg+xml", True, HTML_MAX_AGE),
    ".png": FileType(b"image/png", False, HTML_MAX_AGE),
    ".jpg": FileType(b"image/jpeg", False, HTML_MAX_AGE),
    ".jpeg": FileType(b"image/jpeg", False, HTML_MAX_AGE),
    ".gif": FileType(b"image/gif", False, HTML_MAX_AGE),
    ".webp": FileType(b"image/webp", False, HTML_MAX_AGE),
    ".avif": FileType(b"image/avif", False, HTML_MAX_AGE),
    ".ico": FileType(b"image/x-icon", False, HTML_MAX_AGE),
    ".woff2": FileType(b"font/woff2", False, HTML_MAX_AGE),
    ".woff": FileType(b"font/woff", False, HTML_MAX_AGE),
    ".pdf": FileType(b"application/pdf", False, HTML_MAX_AGE),
}
_UNKNOWN = FileType(b"application/octet-stream", False, HTML_MAX_AGE)
# JSON Feed's own type (jsonfeed.org/version/1.1 asks for it, and readers discovering feeds
# prefer it), for the feed worker's .json files only; any other .json stays application/json.
JSON_FEED_TYPE = FileType(b"application/feed+json" + _UTF8, True, FEED_MAX_AGE)
# Whatever the withdrawn URL's suffix, its tombstone is the render worker's HTML notice.
TOMBSTONE_TYPE = FileType(b"text/html" + _UTF8, True, TOMBSTONE_MAX_AGE)


def file_type(relative: str) -> FileType:
    """Type, compressibility and freshness of a site-relative path (``static/`` is long-lived,
    ``feeds/*.json`` is JSON Feed)."""
    _, suffix = os.path.splitext(relative)
    suffix = suffix.lower()
    if suffix == ".json" and relative.startswith("feeds/"):
        return JSON_FEED_TYPE
    kind = _TYPES.get(suffix, _UNKNOWN)
    if relative.startswith("static/"):
        return kind._replace(max_age=STATIC_MAX_AGE)
    return kind


def gzip_variant(relative: str, data: bytes) -> bytes | None:
    """The gzip form of a file worth compressing, or None when identity is as good.

    Deterministic (no timestamp in the header), so the same content makes the same bytes.
    """
    if not file_type(relative).compressible or len(data) < MIN_GZIP_BYTES:
        return None
    compressed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    if len(compressed) > len(data) * GZIP_MAX_RATIO:
        return None
    return compressed
