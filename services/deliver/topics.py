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

from shared.site import DOCUMENT_KEY, FEED_FORMATS, Listing, ListingKind, absolute

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
    URLs (whether its agency, category or document exists is the caller's question)."""
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
        if not slash or kind not in _TOPIC_KINDS:
            return None
        listing = Listing(ListingKind(kind), key)
    if not listing.key and listing.kind is not ListingKind.ALL:
        return None
    if listing.kind is ListingKind.DOCUMENT and not DOCUMENT_KEY.fullmatch(listing.key):
        return None  # no citation key looks like this (a slash, a query, capitals)
    # Anything else odd in the key (a query, a slash) names no agency or category: the
    # caller's look-up refuses it.
    return listing, fmt


# The listings with a key whose feeds are topics (with "all").
_TOPIC_KINDS = (ListingKind.AGENCY, ListingKind.CATEGORY, ListingKind.DOCUMENT)


class CallbackRefused(ValueError):
    """A callback URL the hub will not call."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix (RFC 6052)
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated; some stacks still route it


def non_public(address: Address) -> Address | None:
    """The non-global address `address` reaches (itself or the IPv4 address it wraps), or
    None if it is global: what the hub may not call (loopback, private, link-local ...)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in IPV4_COMPATIBLE:
            return address  # ::7f00:1 is 127.0.0.1 on some stacks; nothing public lives here
        # The IPv4 address inside: ::ffff:127.0.0.1, 6to4 2002:7f00:1::, NAT64 64:ff9b::7f00:1.
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return None if inner.is_global else inner
    return None if address.is_global else address


def parse_address(text: str) -> Address:
    """An address from getaddrinfo, without an IPv6 scope (`fe80::1%eth0`)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


def check_callback(callback: str, allow_private: bool) -> None:
    """Refuse non-http(s) callbacks, and (unless `allow_private`) any whose host resolves to a
    loopback, private, link-local or otherwise non-global address. Blocking: resolves DNS.

    Checked when subscribing and again before every request, as DNS answers can change (and
    once more at connect time: services/deliver/network.py).
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
        refused = non_public(parse_address(str(info[4][0])))
        if refused is not None:
            raise CallbackRefused(
                f"its host resolves to {refused}, a non-public address (loopback, private or "
                "link-local), which this hub does not call"
            )


def signature(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature` value of a delivery."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def link_header(hub: str, topic: str) -> str:
    return f'<{hub}>; rel="hub", <{topic}>; rel="self"'
