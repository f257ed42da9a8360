"""What the WebSub hub publishes and where it may call: topics, the hub URL, callback checks.

The hub lives on ingest (it needs the database), so its URL is `{ingest URL}/hub`; there is no
setting of its own. A topic is the absolute URL of one of this site's feeds.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from shared.site import FEED_FORMATS, Listing, ListingKind, absolute

HUB_PATH = "/hub"
# What the gateway serves each feed as (services/gateway/files.py), and so what subscribers
# get the body as.
CONTENT_TYPES = {
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
assert set(CONTENT_TYPES) == set(FEED_FORMATS)


def hub_url(ingest_url: str) -> str:
    """`ingest_url` is ``settings.resolved_ingest_url``."""
    return ingest_url.rstrip("/") + HUB_PATH


def topic_url(public_url: str, listing: Listing, fmt: str) -> str:
    return absolute(public_url, listing.feed_path(fmt))


def topics_of(public_url: str, listing: Listing) -> dict[str, str]:
    """Each format's topic URL of a listing."""
    return {fmt: topic_url(public_url, listing, fmt) for fmt in FEED_FORMATS}


def parse_topic(public_url: str, topic: str) -> tuple[Listing, str] | None:
    """The listing and format a topic URL names; None if it is not one of this site's feed
    URLs (whether its agency or category exists is the caller's question)."""
    prefix = public_url.rstrip("/") + "/feeds/"
    if not topic.startswith(prefix):
        return None
    rest = topic.removeprefix(prefix)
    name, dot, fmt = rest.rpartition(".")
    if not dot or fmt not in FEED_FORMATS:
        return None
    if name == "all":
        listing = Listing(ListingKind.ALL)
    else:
        kind, slash, key = name.partition("/")
        if not slash or kind not in (ListingKind.AGENCY, ListingKind.CATEGORY):
            return None
        listing = Listing(ListingKind(kind), key)
    if not listing.key and listing.kind is not ListingKind.ALL:
        return None
    # Anything else odd in the key (a query, a slash) names no agency or category: the
    # caller's look-up refuses it.
    return listing, fmt


class CallbackRefused(ValueError):
    """A callback URL the hub will not call."""


def check_callback(callback: str, allow_private: bool) -> None:
    """Refuse non-http(s) callbacks, and (unless `allow_private`) any whose host resolves to a
    loopback, private, link-local or otherwise non-global address. Blocking: resolves DNS.

    Checked when subscribing and again before every request, as DNS answers can change.
    """
    try:
        parts = urlsplit(callback)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # What httpx refuses (a control character, a bad IDNA host) would otherwise pass here
        # and fail every request: InvalidURL is no httpx.HTTPError.
        httpx.URL(callback)
    except (ValueError, httpx.InvalidURL) as exc:  # a bad port, a bad IPv6 literal, ...
        raise CallbackRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise CallbackRefused("must not carry credentials")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"its host does not resolve ({exc})") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if not address.is_global:
            raise CallbackRefused(
                f"its host resolves to {address}, a non-public address (loopback, private or "
                "link-local), which this hub does not call"
            )


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature` value of a delivery."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def link_header(hub: str, topic: str) -> str:
    return f'<{hub}>; rel="hub", <{topic}>; rel="self"'
