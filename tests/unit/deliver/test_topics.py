"""Topics, callback refusal (SSRF), signatures and backoff of the WebSub hub."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from services.deliver.tasks import BACKOFF_CAP, DELIVERY_RETRIES, backoff
from services.deliver.topics import (
    CallbackRefused,
    check_callback,
    hub_url,
    link_header,
    parse_topic,
    signature,
    topics_of,
)
from shared.site import ALL, Listing, ListingKind

PUBLIC = "https://bantin.example.gov.vn"
AGENCY = Listing(ListingKind.AGENCY, "so-noi-vu")


def test_every_feed_url_is_a_topic_and_names_its_listing_and_format() -> None:
    for listing in (ALL, AGENCY, Listing(ListingKind.CATEGORY, "giao-duc")):
        for fmt, topic in topics_of(PUBLIC, listing).items():
            assert parse_topic(PUBLIC, topic) == (listing, fmt)
    assert topics_of(PUBLIC, AGENCY)["atom"] == PUBLIC + "/feeds/agency/so-noi-vu.atom"


@pytest.mark.parametrize(
    "topic",
    [
        "https://elsewhere.example.org/feeds/all.atom",
        PUBLIC + "/feeds/all.xml",
        PUBLIC + "/feeds/all",
        PUBLIC + "/feeds/agency/.atom",
        PUBLIC + "/feeds/tag/x.atom",
        PUBLIC + "/so-noi-vu/",
        "http://bantin.example.gov.vn/feeds/all.atom",  # not the site's scheme
        "",
    ],
)
def test_anything_else_is_not_a_topic(topic: str) -> None:
    assert parse_topic(PUBLIC, topic) is None


def test_the_hub_lives_on_ingest() -> None:
    assert hub_url("https://api.example.gov.vn/") == "https://api.example.gov.vn/hub"
    assert link_header("https://h/hub", "https://t/feed") == (
        '<https://h/hub>; rel="hub", <https://t/feed>; rel="self"'
    )


@pytest.mark.parametrize(
    "callback",
    [
        "http://127.0.0.1:8080/cb",
        "http://localhost/cb",
        "http://10.1.2.3/cb",
        "http://192.168.0.10/cb",
        "http://172.16.5.5/cb",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
        "http://[::1]/cb",
        "http://[fe80::1]/cb",
        "http://[::ffff:127.0.0.1]/cb",  # loopback in IPv6 clothing
        "http://0.0.0.0/cb",
    ],
)
def test_callbacks_into_private_networks_are_refused_unless_allowed(callback: str) -> None:
    with pytest.raises(CallbackRefused, match="non-public address"):
        check_callback(callback, allow_private=False)
    check_callback(callback, allow_private=True)


@pytest.mark.parametrize(
    "callback",
    ["ftp://example.org/cb", "file:///etc/passwd", "javascript:alert(1)", "//example.org/cb",
     "http:///cb", "http://user:pw@example.org/cb", "http://example.org:99999/cb"],
)  # fmt: skip
def test_callbacks_that_are_not_plain_http_urls_are_refused_even_when_private_is_allowed(
    callback: str,
) -> None:
    with pytest.raises(CallbackRefused):
        check_callback(callback, allow_private=True)


def test_a_public_address_is_accepted() -> None:
    check_callback("https://93.184.216.34/cb?x=1", allow_private=False)  # a literal: no DNS


def test_signature_is_the_hex_hmac_sha256_of_the_body() -> None:
    # RFC 4231-style known answer (Wikipedia's HMAC example).
    body = b"The quick brown fox jumps over the lazy dog"
    assert signature("key", body) == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )
    utf8 = "bí mật"
    expected = hmac.new(utf8.encode(), b"tin", hashlib.sha256).hexdigest()
    assert signature(utf8, b"tin") == "sha256=" + expected


def test_backoff_grows_stays_jittered_and_bounded() -> None:
    for retries in range(DELIVERY_RETRIES):
        ceiling = min(BACKOFF_CAP, 2.0 * 2**retries)
        delays = {backoff(retries) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # jittered: retries of many subscribers do not line up
    # The give-up comes within a bounded time of the first try.
    worst = sum(min(BACKOFF_CAP, 2.0 * 2**retries) for retries in range(DELIVERY_RETRIES))
    assert worst <= 10 * 60


@pytest.mark.parametrize("callback", ["http://example.com/\x7f", "http://☃.example/push"])
def test_a_callback_httpx_cannot_request_is_refused(callback: str) -> None:
    # Else it passes, gets a 202, and its every request raises httpx.InvalidURL.
    with pytest.raises(CallbackRefused, match="not a valid URL"):
        check_callback(callback, allow_private=True)
