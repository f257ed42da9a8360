"""The running system seen by a reader: publish the seed sample, open its page in chromium
through the gateway, use the toolbar, and follow the page's feed autodiscovery links."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import feedparser
import httpx
import pytest

from services.client import load_bulletin, publish
from tests.system import System, start_system, stop_system

pytestmark = pytest.mark.e2e
SEED = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "000_4fbfac1c975a2018.txt"


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

    # Feed autodiscovery, the way feed readers do it: <link rel="alternate"> in <head>.
    feeds = page.eval_on_selector_all(
        'head link[rel="alternate"]', "links => links.map(l => [l.type, l.href])"
    )
    assert {kind for kind, _ in feeds} == {"application/rss+xml", "application/atom+xml"}
    for _kind, href in feeds:
        parsed = feedparser.parse(httpx.get(href).content)
        assert parsed.bozo == 0
        if href.endswith(("/feeds/all.rss", "/feeds/all.atom", "/bac-kan.rss", "/bac-kan.atom")):
            assert document["url"] in [entry.link for entry in parsed.entries]
    assert errors == []
    context.close()
