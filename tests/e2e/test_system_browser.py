"""The running system seen by a reader: publish the seed sample, open its page in chromium
through the gateway, use the toolbar, follow the page's feed autodiscovery links, and visit
every kind of page the site has (article, home, agency, category, 404, 410) under the site's
CSP without one violation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import feedparser
import httpx
import pytest

from services.cli.client import load_bulletin, publish
from shared.security_headers import SITE_HEADERS
from shared.testing import System, start_system, stop_system
from tests.e2e.conftest import watch_context

pytestmark = pytest.mark.e2e
SEED = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(tmp_path_factory.mktemp("bantin-e2e"))
    yield running
    stop_system(running)


def test_a_reader_opens_the_seed_page_resizes_text_and_finds_the_feeds(
    system: System, browser: Any
) -> None:
    key = (system.data_dir / "demo-agency.key").read_text().strip()
    bulletin = load_bulletin(SEED, ZoneInfo("Asia/Ho_Chi_Minh"))
    document = publish(bulletin, api_url=system.ingest_url, key=key)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = watch_context(context)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(document["url"])
    assert page.title().startswith("Ban hành Kế hoạch hành động")
    assert page.locator("h1").inner_text().startswith("Ban hành Kế hoạch hành động")
    assert page.locator("time").first.inner_text() == "31/07/2020"

    def body_px() -> float:
        size = page.eval_on_selector(".article__body p", "p => getComputedStyle(p).fontSize")
        return float(size.removesuffix("px"))

    before = body_px()
    page.get_by_role("button", name="Tăng cỡ chữ").click()
    assert body_px() > before
    page.reload()  # the reader's choice is remembered
    assert body_px() > before
    page.get_by_role("button", name="Giảm cỡ chữ").click()
    assert body_px() == before
    assert watch.violations(page) == []  # the toolbar works under the CSP

    # Feed autodiscovery, the way feed readers do it: <link rel="alternate"> in <head>.
    feeds = page.eval_on_selector_all(
        'head link[rel="alternate"]', "links => links.map(l => [l.type, l.href])"
    )
    kinds = {"application/rss+xml", "application/atom+xml", "application/feed+json"}
    assert {kind for kind, _ in feeds} == kinds
    for kind, href in feeds:
        answer = httpx.get(href)
        assert answer.headers["x-content-type-options"] == "nosniff"
        if kind == "application/feed+json":  # JSON Feed: feedparser 6.0 does not read it
            assert answer.headers["content-type"] == "application/feed+json; charset=utf-8"
            links = [item["url"] for item in answer.json()["items"]]
        else:
            parsed = feedparser.parse(answer.content)
            assert parsed.bozo == 0
            links = [entry.link for entry in parsed.entries]
        if href.endswith(("/feeds/all.rss", "/feeds/all.atom", "/feeds/all.json",
                          "/bac-kan.rss", "/bac-kan.atom", "/bac-kan.json")):  # fmt: skip
            assert document["url"] in links
    assert errors == []
    context.close()


def _withdrawn_url(system: System, key: str) -> str:
    """A bulletin published, then withdrawn: its URL answers 410 with the notice."""
    bulletin = load_bulletin(SEED, ZoneInfo("Asia/Ho_Chi_Minh"))
    bulletin["title"] = "Bản tin sẽ được gỡ bỏ"
    document = publish(bulletin, api_url=system.ingest_url, key=key)
    with system.api(key) as client:
        assert client.delete(f"/v1/bulletins/{document['id']}").status_code == 202
    deadline = time.monotonic() + 30
    while httpx.get(document["url"]).status_code != 410:
        assert time.monotonic() < deadline, "the withdrawn page never answered 410"
        time.sleep(0.05)
    url: str = document["url"]
    return url


def test_every_kind_of_page_keeps_to_the_csp(system: System, browser: Any) -> None:
    key = (system.data_dir / "demo-agency.key").read_text().strip()
    bulletin = load_bulletin(SEED, ZoneInfo("Asia/Ho_Chi_Minh"))
    bulletin["category"] = "Giáo dục"  # so the page links a category listing too
    article = publish(bulletin, api_url=system.ingest_url, key=key)["url"]
    gone = _withdrawn_url(system, key)
    context = browser.new_context()
    watch = watch_context(context)
    page = context.new_page()
    page.goto(article)
    crumbs = page.eval_on_selector_all(".crumbs a", "links => links.map(l => l.href)")
    assert len(crumbs) == 3  # home, agency, category: the listing pages
    pages = {
        "article": (article, 200),
        "home": (crumbs[0], 200),
        "agency": (crumbs[1], 200),
        "category": (crumbs[2], 200),
        "missing": (system.gateway_url + "/khong-co-trang-nay.html", 404),
        "withdrawn": (gone, 410),
    }
    expected = {name.lower(): value for name, value in SITE_HEADERS}
    for kind, (url, status) in pages.items():
        response = page.goto(url, wait_until="load")
        assert response is not None and response.status == status, kind
        headers = response.headers
        assert {name: headers.get(name) for name in expected} == expected, kind
        # The site's stylesheet loaded (the 404 page's too), and nothing was refused, be it
        # the toolbar script, the JSON-LD block or a style.
        rules = "[...document.styleSheets].reduce((n, sheet) => n + sheet.cssRules.length, 0)"
        assert page.evaluate(rules) > 50, kind
        assert watch.violations(page) == [], kind
    assert (watch.dialogs, watch.errors) == ([], [])
    context.close()
