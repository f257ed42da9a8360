"""The gateway's feed answers: WebSub discovery Link headers and the archives' cache lifetime.

Every subscription feed names its hub and its own URL (W3C WebSub 4), the very topic URL the
hub accepts; a month's archive document (RFC 5005) names itself only, and is cached for a day
once its month (UTC) is over. On the 200, the 304 and HEAD, from the cache and when streamed.
deploy/nginx.conf says the same (test_nginx_front.py checks that through a real nginx).
"""

from __future__ import annotations

import calendar
from pathlib import Path

import httpx
import pytest

from services.deliver.topics import hub_url, parse_topic
from services.gateway.app import DEFAULT_MAX_ENTRY_BYTES, Gateway, create_app
from services.gateway.files import (
    ARCHIVE_MAX_AGE,
    ARCHIVE_SETTLE_SECONDS,
    FeedLinks,
    feed_extras,
    month_of,
)
from shared.filetypes import FEED_MAX_AGE
from shared.settings import Settings
from shared.site import FEED_FORMATS, Listing, ListingKind, tombstone_for
from shared.storage import LocalStorage
from tests.unit.gateway.test_gateway import Client, call

PUBLIC = "https://tin.example.gov.vn"
INGEST = "https://api.tin.example.gov.vn/"
# Big enough to be gzipped, so the gzip variant is checked too.
FEED = b"<?xml version='1.0'?><rss><channel>" + b"<item><title>x</title></item>" * 40 + b"</rss>"
LISTINGS = [
    Listing(ListingKind.ALL),
    Listing(ListingKind.AGENCY, "bac-kan"),
    Listing(ListingKind.CATEGORY, "giao-duc"),
]
FEEDS = [listing.feed_path(fmt) for listing in LISTINGS for fmt in FEED_FORMATS]
# 2026-11-30T23:59:59Z, a second before December.
END_OF_NOVEMBER = float(calendar.timegm((2026, 11, 30, 23, 59, 59, 0, 0, 0)))


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, site_dir=tmp_path / "site", public_url=PUBLIC, ingest_public_url=INGEST
    )


@pytest.fixture
def storage(settings: Settings) -> LocalStorage:
    settings.resolved_site_dir.mkdir(parents=True)
    store = LocalStorage(settings.resolved_site_dir)
    for path in FEEDS:
        store.put(path.lstrip("/"), FEED)
    store.put("bac-kan/tin-1.html", b"<!doctype html><title>x</title>")
    store.put("feeds.opml", b"<opml/>")
    return store


@pytest.fixture
def client(settings: Settings, storage: LocalStorage) -> Client:
    return Client(create_app(settings))


def links(response: httpx.Response) -> dict[str, str]:
    """rel -> URL, as httpx parses the Link header lines."""
    parsed = response.links
    return {str(rel): link["url"] for rel, link in parsed.items()}


@pytest.mark.parametrize("path", FEEDS)
def test_every_feed_names_its_hub_and_itself(client: Client, settings: Settings, path: str) -> None:
    hub = hub_url(settings.resolved_ingest_url)
    assert hub == "https://api.tin.example.gov.vn/hub"  # ingest's /hub, its slash dropped
    wanted = {"hub": hub, "self": PUBLIC + path}
    # Exactly the topic the hub accepts for this feed.
    assert parse_topic(settings.public_url, wanted["self"]) is not None
    for encoding in ("identity", "gzip"):
        response = client.get(path, {"Accept-Encoding": encoding})
        assert response.status_code == 200
        assert links(response) == wanted
        assert response.headers["cache-control"] == f"public, max-age={FEED_MAX_AGE}"
        etag = response.headers["etag"]
        again = client.get(path, {"Accept-Encoding": encoding, "If-None-Match": etag})
        assert again.status_code == 304 and links(again) == wanted
        head = client.head(path, {"Accept-Encoding": encoding})
        assert head.status_code == 200 and head.content == b"" and links(head) == wanted


def test_the_query_is_never_part_of_self(client: Client) -> None:
    response = client.get("/feeds/all.rss?hub.mode=subscribe")
    assert links(response)["self"] == PUBLIC + "/feeds/all.rss"


def test_the_hub_defaults_to_ingest_on_its_own_address(tmp_path: Path) -> None:
    # No ingest_public_url: the hub's URL is ingest's local address, as the hub computes it.
    settings = Settings(data_dir=tmp_path, site_dir=tmp_path / "site", ingest_port=8123)
    LocalStorage(settings.resolved_site_dir).put("feeds/all.atom", FEED)
    response = Client(create_app(settings)).get("/feeds/all.atom")
    assert links(response) == {
        "hub": "http://127.0.0.1:8123/hub",
        "self": f"{settings.public_url}/feeds/all.atom",
    }


@pytest.mark.parametrize(
    "path",
    ["/bac-kan/tin-1.html", "/feeds.opml", "/feeds/all/ghi-chu.rss", "/feeds/all/2020-07.json",
     "/feeds/agency/bac-kan/sub/x.rss"],
)  # fmt: skip
def test_nothing_else_has_a_link(client: Client, storage: LocalStorage, path: str) -> None:
    if not storage.exists(path.lstrip("/")):
        storage.put(path.lstrip("/"), FEED)
    response = client.get(path)
    assert response.status_code == 200 and "link" not in response.headers


def test_a_withdrawn_feed_path_answers_410_without_link(
    client: Client, storage: LocalStorage
) -> None:
    storage.delete("feeds/agency/bac-kan.rss")
    storage.put(tombstone_for("/feeds/agency/bac-kan.rss"), b"<!doctype html><p>Gone</p>")
    response = client.get("/feeds/agency/bac-kan.rss")
    assert response.status_code == 410 and "link" not in response.headers


def test_a_gateway_given_no_urls_sends_no_link(settings: Settings, storage: LocalStorage) -> None:
    response = Client(Gateway(settings.resolved_site_dir)).get("/feeds/all.rss")
    assert response.status_code == 200 and "link" not in response.headers


# -- archives -------------------------------------------------------------------------------


def archive_gateway(
    settings: Settings, clock: WallClock, max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
) -> Gateway:
    """A gateway as create_app makes it, but on a clock of the test's own."""
    links = FeedLinks(settings.public_url, hub_url(settings.resolved_ingest_url))
    return Gateway(
        settings.resolved_site_dir, links=links, wall_clock=clock, max_entry_bytes=max_entry_bytes
    )


@pytest.mark.parametrize(
    ("path", "max_age"),
    [
        ("/feeds/all/2026-10.rss", ARCHIVE_MAX_AGE),  # last month: over
        ("/feeds/agency/bac-kan/2019-01-3.atom", ARCHIVE_MAX_AGE),  # a later part, long ago
        ("/feeds/category/giao-duc/2026-11.rss", FEED_MAX_AGE),  # this month: still growing
        ("/feeds/category/giao-duc/2026-11-2.atom", FEED_MAX_AGE),
    ],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_archives_name_themselves_and_past_months_keep_a_day(
    settings: Settings, storage: LocalStorage, path: str, max_age: int, streamed: bool
) -> None:
    storage.put(path.lstrip("/"), FEED)
    # Streamed: files over max_entry_bytes are never cached, but get the same headers.
    limit = 16 if streamed else DEFAULT_MAX_ENTRY_BYTES
    app = archive_gateway(settings, WallClock(END_OF_NOVEMBER), limit)
    client = Client(app)
    response = client.get(path)
    assert response.status_code == 200 and response.content == FEED
    assert links(response) == {"self": PUBLIC + path}  # no hub: no subscribing to a month
    assert response.headers["cache-control"] == f"public, max-age={max_age}"
    again = client.get(path, {"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and links(again) == {"self": PUBLIC + path}
    assert again.headers["cache-control"] == f"public, max-age={max_age}"
    head = call(app, path, "HEAD")
    assert head.body == b"" and head.headers["cache-control"] == f"public, max-age={max_age}"
    assert head.headers["link"] == f'<{PUBLIC}{path}>; rel="self"'


def test_an_archive_cached_in_its_month_keeps_a_day_once_the_month_is_over(
    settings: Settings, storage: LocalStorage
) -> None:
    path = "/feeds/all/2026-11.atom"
    storage.put(path.lstrip("/"), FEED)
    clock = WallClock(END_OF_NOVEMBER)
    app = archive_gateway(settings, clock)
    client = Client(app)
    assert client.get(path).headers["cache-control"] == f"public, max-age={FEED_MAX_AGE}"
    assert path in app.cache  # held with November's headers, the file unchanged
    clock.now += 1  # 2026-12-01T00:00:00Z: November's last bulletins may still be arriving
    assert client.get(path).headers["cache-control"] == f"public, max-age={FEED_MAX_AGE}"
    clock.now += ARCHIVE_SETTLE_SECONDS  # 2026-12-02: November is settled
    response = client.get(path)
    assert response.headers["cache-control"] == f"public, max-age={ARCHIVE_MAX_AGE}"
    assert response.content == FEED


def test_on_a_months_first_day_last_months_archive_keeps_a_feeds_minute() -> None:
    first_day = END_OF_NOVEMBER + 1 + 3600  # 2026-12-01T01:00:00Z
    last_month = feed_extras("feeds/all/2026-11.rss", None, first_day)
    assert (last_month.max_age, last_month.until) == (None, END_OF_NOVEMBER + 1 + 86_400)
    older = feed_extras("feeds/all/2026-10.rss", None, first_day)
    assert older.max_age is None  # the same rule for every month: nginx cannot tell them apart
    settled = feed_extras("feeds/all/2026-11.rss", None, END_OF_NOVEMBER + 1 + 86_400)
    assert settled.max_age == ARCHIVE_MAX_AGE


def test_month_of_is_the_utc_month_and_the_start_of_the_next() -> None:
    assert month_of(END_OF_NOVEMBER) == ("2026-11", END_OF_NOVEMBER + 1)
    december = calendar.timegm((2026, 12, 31, 12, 0, 0, 0, 0, 0))
    assert month_of(december) == ("2026-12", float(calendar.timegm((2027, 1, 1, 0, 0, 0))))


def test_feed_extras_only_for_feeds_and_archives() -> None:
    links = FeedLinks(PUBLIC, "https://h.example/hub")
    assert feed_extras("bac-kan/tin-1.html", links, END_OF_NOVEMBER).headers == []
    assert feed_extras("feeds/all.rss", None, END_OF_NOVEMBER).headers == []
    current = feed_extras("feeds/all/2026-11.rss", links, END_OF_NOVEMBER)
    assert (current.max_age, current.until) == (None, END_OF_NOVEMBER + 1)
    past = feed_extras("feeds/all/2026-10.rss", None, END_OF_NOVEMBER)
    assert (past.headers, past.max_age, past.until) == ([], ARCHIVE_MAX_AGE, None)
