"""A legal document's feeds and archives (/feeds/document/{key}...) get the same Link headers
and cache lifetimes as the other listings', from the gateway alone and from nginx in front
(deploy/nginx.conf), and their URLs are WebSub topics the hub accepts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.deliver.topics import parse_topic
from services.gateway.files import FeedLinks, feed_extras
from shared.site import document
from shared.storage import LocalStorage
from tests.unit.gateway.test_nginx_front import (  # noqa: F401 - the fixtures
    FEED,
    GZ,
    HUB,
    JSON_FEED,
    PAST_MONTH,
    PUBLIC,
    THIS_MONTH,
    fetch,
    ingest_ports,
    links,
    ports,
    site,
)

KEY = "qd-ttg-628-2020"
FEEDS = [document(KEY).feed_path(fmt) for fmt in ("rss", "atom", "json")]
ARCHIVES = [f"/feeds/document/{KEY}/{PAST_MONTH}-2.atom", f"/feeds/document/{KEY}/{THIS_MONTH}.rss"]


@pytest.fixture(scope="module")
def served(site: Path, ports: tuple[int, int]) -> tuple[int, int]:  # noqa: F811
    """The front module's gateway and nginx, with the document's feeds added to the site."""
    storage = LocalStorage(site)
    for path in FEEDS + ARCHIVES:
        storage.put(path.lstrip("/"), JSON_FEED if path.endswith(".json") else FEED)
    for found in [site, *site.rglob("*")]:
        found.chmod(0o755 if found.is_dir() else 0o644)  # nginx's workers must read them
    return ports


def test_the_paths_are_the_ones_the_site_writes() -> None:
    assert FEEDS[0] == f"/feeds/document/{KEY}.rss"
    for path in FEEDS:
        found = parse_topic(PUBLIC, PUBLIC + path)
        assert found is not None and found[0] == document(KEY)
    # Nothing that is no citation key is a topic.
    for bad in ("/feeds/document/QD-628.rss", "/feeds/document/a/b.rss", "/feeds/document/.rss"):
        assert parse_topic(PUBLIC, PUBLIC + bad) is None, bad


def test_the_gateway_names_hub_and_self_of_document_feeds() -> None:
    feed_links = FeedLinks(PUBLIC, HUB)
    for path in FEEDS:
        link = dict(feed_extras(path.lstrip("/"), feed_links, 0.0).headers)[b"link"]
        assert b'rel="hub"' in link and (PUBLIC + path).encode() in link, path
    for path in ARCHIVES:
        link = dict(feed_extras(path.lstrip("/"), feed_links, 0.0).headers)[b"link"]
        assert link == f'<{PUBLIC + path}>; rel="self"'.encode(), path


@pytest.mark.parametrize("path", FEEDS)
def test_document_feeds_name_their_hub_and_themselves(served: tuple[int, int], path: str) -> None:
    wanted = {"hub": HUB, "self": PUBLIC + path}
    for port, headers in ((served[0], {}), (served[1], {}), (served[1], GZ)):
        status, answer, _ = fetch(port, "GET", path, headers)
        assert (status, links()) == (200, wanted), (port, headers)
        assert answer["cache-control"] == "public, max-age=60"


@pytest.mark.parametrize("path", ARCHIVES)
def test_document_archives_are_cached_as_the_others(served: tuple[int, int], path: str) -> None:
    settled = time.gmtime().tm_mday != 1
    max_age = 86400 if PAST_MONTH in path and settled else 60
    for port, headers in ((served[0], {}), (served[1], {}), (served[1], GZ)):
        status, answer, _ = fetch(port, "GET", path, headers)
        assert status == 200 and links() == {"self": PUBLIC + path}, (port, headers)
        assert answer["cache-control"] == f"public, max-age={max_age}", (port, headers)
