"""WCAG 2.2 AA on every kind of public page, checked in Chromium against the running system.

The system is started, the sample bulletins in examples/ are published (plus one whose HTML
body marks passages in other languages, and one that is then withdrawn), and then:

- axe-core (the copy axe-playwright-python ships, so no network is needed) scans the article,
  home, agency, category, /feeds/, 404 and 410 pages: any violation of serious or critical
  impact fails;
- a keyboard walk of the article page: Tab reaches the skip link, the text-size toolbar and
  every feed link, in that order, and each shows a focus style it does not have at rest;
- the toolbar works from the keyboard and says what it did; the pages reflow at 320 CSS px
  without horizontal scrolling; prefers-reduced-motion turns the transitions off; passages the
  body marks with `lang` keep it on the page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.cli.client import load_bulletin, publish
from shared.testing import System, eventually, start_system, stop_system
from tests.e2e.conftest import watch_context

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = EXAMPLES / "000_4fbfac1c975a2018.txt"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
AGENCY = "UBND tỉnh Bắc Kạn"  # the demo agency `bantin up` creates

# What axe checks: every WCAG 2.0, 2.1 and 2.2 level A and AA rule (target size included,
# which axe does not run by default), and its best practices (skip link, landmarks).
AXE_OPTIONS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"],
    },
    "resultTypes": ["violations"],
}
FAILING_IMPACTS = {"serious", "critical"}

# A body with passages in other languages, marked the way an agency's HTML would mark them.
MIXED_LANGUAGE_BODY = (
    "<p>Đại diện UNICEF phát biểu tại buổi lễ:</p>"
    '<blockquote lang="en"><p>Every child has the right to learn in a safe school.</p>'
    "</blockquote>"
    '<p>Khẩu hiệu của chương trình là <q lang="fr">L’école pour tous</q>.</p>'
)

# Every element the keyboard can reach, in document order (nothing on these pages sets a
# positive tabindex, so this is also the Tab order).
FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]:not([tabindex='-1'])"
# The focus indicator as the browser draws it.
RING_STYLE = """el => {
  const s = getComputedStyle(el);
  return [s.outlineStyle, s.outlineWidth, s.outlineColor, s.outlineOffset, s.boxShadow].join(" ");
}"""
# The focus ring's colour and the colour it is drawn on: the nearest opaque background
# around the element (the ring sits outside it, so not the element's own).
RING_AND_SURROUNDINGS = """(el) => {
  let around = el.parentElement;
  while (around && getComputedStyle(around).backgroundColor.match(/rgba\\(.*, 0\\)$/)) {
    around = around.parentElement;
  }
  const background = around ? getComputedStyle(around).backgroundColor : "rgb(255, 255, 255)";
  return [getComputedStyle(el).outlineColor, background];
}"""
# Where the elements `selector` matches stand among the focusable ones.
POSITIONS = """([focusable, selector]) => {
  const all = [...document.querySelectorAll(focusable)];
  return [...document.querySelectorAll(selector)].map((el) => all.indexOf(el));
}"""
# The rendered focusable elements that stick out past the viewport's right edge.
OUTSIDE_VIEWPORT = """(focusable) => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll(focusable)]
    .filter((el) => el.getClientRects().length > 0)
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => el.outerHTML.slice(0, 100));
}"""


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(tmp_path_factory.mktemp("bantin-a11y"))
    yield running
    stop_system(running)


@pytest.fixture(scope="module")
def pages(system: System) -> dict[str, tuple[str, int]]:
    """Publish the samples; return each public page kind as (URL, expected status)."""
    key = (system.data_dir / "demo-agency.key").read_text().strip()
    samples = sorted(EXAMPLES.glob("*.txt")) + sorted(EXAMPLES.glob("*.json"))
    assert SEED in samples and len(samples) >= 4
    for sample in samples:
        if sample != SEED:
            publish(load_bulletin(sample, TZ), api_url=system.ingest_url, key=key)
    seed = load_bulletin(SEED, TZ)
    seed["category"] = "Giáo dục"  # so the article links a category page and its feeds
    article = publish(seed, api_url=system.ingest_url, key=key)["url"]

    mixed = load_bulletin(SEED, TZ)
    mixed.update(title="Lễ khai giảng có đại biểu quốc tế", body=MIXED_LANGUAGE_BODY)
    mixed["body_format"] = "html"
    mixed.pop("summary", None)
    mixed_url = publish(mixed, api_url=system.ingest_url, key=key)["url"]

    doomed = load_bulletin(SEED, TZ)
    doomed["title"] = "Bản tin sẽ được gỡ bỏ"
    gone = publish(doomed, api_url=system.ingest_url, key=key)
    with system.api(key) as client:
        assert client.delete(f"/v1/bulletins/{gone['id']}").status_code == 202
    eventually(lambda: httpx.get(gone["url"]).status_code == 410, "the withdrawn page")

    home = system.gateway_url + "/"
    html = httpx.get(article).text
    agency = _link_after(html, 'class="article__facts"', system.gateway_url)
    category = _link_after(html, "<dt>Chuyên mục</dt>", system.gateway_url)
    feeds = system.gateway_url + "/feeds/"
    # The feed directory is rebuilt after the publishes: wait until it lists the category.
    eventually(lambda: "Giáo dục" in httpx.get(feeds).text, "the /feeds/ page")
    # The seed cites five legal documents: their page and the index of them (rebuilt as
    # seldom as a sitemap under load, at once here).
    document = system.gateway_url + "/van-ban/qd-ttg-628-2020/"
    documents = system.gateway_url + "/van-ban/"
    eventually(lambda: httpx.get(document).status_code == 200, "the document page")
    eventually(lambda: "qd-ttg-628-2020" in httpx.get(documents).text, "the /van-ban/ page")
    return {
        "article": (article, 200),
        "article-mixed-language": (mixed_url, 200),
        "home": (home, 200),
        "agency": (agency, 200),
        "category": (category, 200),
        "feeds": (feeds, 200),
        "document": (document, 200),
        "documents": (documents, 200),
        "missing": (system.gateway_url + "/khong-co-trang-nay.html", 404),
        "withdrawn": (gone["url"], 410),
    }


def _link_after(html: str, marker: str, base: str) -> str:
    """The first href after `marker` in `html`, made absolute."""
    start = html.index(marker)
    href = html[html.index('href="', start) + 6 :].split('"', 1)[0]
    return base + href if href.startswith("/") else href


def _open(context: Any, url: str, status: int) -> Any:
    page = context.new_page()
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == status, url
    return page


def _luminance(css_colour: str) -> float:
    """Relative luminance (WCAG 2) of an opaque `rgb(r, g, b)` computed colour."""
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_colour)[:3])
    linear = [
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
        for c in (red / 255, green / 255, blue / 255)
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two computed colours, from 1 to 21."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_contrast_is_computed_as_wcag_says() -> None:
    assert contrast("rgb(255, 255, 255)", "rgb(0, 0, 0)") == pytest.approx(21)
    # The feed badges before issue 14: white on #f26522.
    assert contrast("rgb(255, 255, 255)", "rgb(242, 101, 34)") == pytest.approx(3.15, abs=0.01)


def _serious(results: Any) -> list[dict[str, Any]]:
    return [
        {
            "rule": violation["id"],
            "impact": violation["impact"],
            "help": violation["help"],
            "nodes": [node["target"] for node in violation["nodes"]],
            "why": [node["failureSummary"] for node in violation["nodes"]][:3],
        }
        for violation in results.response["violations"]
        if violation["impact"] in FAILING_IMPACTS
    ]


@pytest.mark.parametrize("width", [1280, 320])
def test_axe_finds_nothing_serious_on_any_page_kind(
    pages: dict[str, tuple[str, int]], browser: Any, width: int
) -> None:
    axe = axe_sync.Axe()
    context = browser.new_context(viewport={"width": width, "height": 900})
    watch = watch_context(context)
    found: dict[str, list[dict[str, Any]]] = {}
    scanned = []
    try:
        for kind, (url, status) in pages.items():
            page = _open(context, url, status)
            if kind.startswith("article"):  # site.js has revealed the toolbar: scan it too
                page.locator(".toolbar").wait_for(state="visible")
            results = axe.run(page, options=AXE_OPTIONS)
            scanned.append(kind)
            if serious := _serious(results):
                found[kind] = serious
            page.close()
        assert found == {}, json.dumps(found, ensure_ascii=False, indent=1)
        assert scanned == list(pages)
        assert (watch.dialogs, watch.errors) == ([], [])  # axe itself broke nothing
    finally:
        context.close()


def test_keyboard_walk_of_the_article_page(pages: dict[str, tuple[str, int]], browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = _open(context, *pages["article"])
        page.locator(".toolbar").wait_for(state="visible")
        focusable = page.locator(FOCUSABLE)
        count = focusable.count()
        # How each element looks at rest, before the keyboard has touched anything.
        at_rest = [focusable.nth(i).evaluate(RING_STYLE) for i in range(count)]
        index_of_active = f"""() => [...document.querySelectorAll("{FOCUSABLE}")]
            .indexOf(document.activeElement)"""

        visited: list[int] = []
        for _ in range(count + 2):  # bounded: once round the page and back to its start
            page.keyboard.press("Tab")
            index = page.evaluate(index_of_active)
            if index < 0 or (visited and index == visited[0]):
                break  # left the document, or came round again
            ring = focusable.nth(index).evaluate(RING_STYLE)
            element = focusable.nth(index).evaluate("el => el.outerHTML.slice(0, 120)")
            assert ring != at_rest[index], f"no visible focus on {element}"
            assert not ring.startswith("none "), f"no outline on {element}"
            colours = focusable.nth(index).evaluate(RING_AND_SURROUNDINGS)
            # WCAG 1.4.11: the indicator stands out 3:1 from what surrounds it.
            assert contrast(*colours) >= 3, (element, colours, contrast(*colours))
            visited.append(index)
        # Every focusable element was reached, once, in document order.
        assert visited == list(range(count))

        def indexes(selector: str) -> list[int]:
            marked = page.evaluate(POSITIONS, [FOCUSABLE, selector])
            assert marked and all(i >= 0 for i in marked), selector
            return list(marked)

        skip = indexes("a.skip-link")
        toolbar = indexes(".toolbar button")
        feed_links = indexes("a.feeds__link")
        assert skip == [0]  # the very first Tab
        assert len(toolbar) == 2
        # Agency and category feeds in the follow block, then all three listings' in the footer.
        assert len(feed_links) == 3 * 2 + 3 * 3
        assert skip[0] < min(toolbar) and max(toolbar) < min(feed_links)

        # Every feed link says out of context whose feed it is, and shows its format.
        for i in feed_links:
            link = focusable.nth(i)
            shown = link.evaluate("a => a.lastChild.textContent")
            assert shown in {"RSS", "Atom", "JSON Feed"}
            assert link.text_content().startswith("Theo dõi ")
            assert link.text_content().endswith(f" qua {shown}")
        assert (
            page.get_by_role(
                "link", name=f"Theo dõi bản tin của {AGENCY} qua RSS", exact=True
            ).count()
            == 2
        )  # follow block and footer

        # The skip link shows when focused and takes the keyboard to the content.
        skip_link = page.locator("a.skip-link")
        page.evaluate("document.activeElement.blur()")
        hidden_box = skip_link.bounding_box()
        assert hidden_box is not None and hidden_box["y"] + hidden_box["height"] <= 0
        skip_link.focus()
        box = skip_link.bounding_box()
        assert box is not None and box["y"] >= 0 and box["width"] > 0
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "noi-dung"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.dataset.step") == "1"  # "Tăng cỡ chữ"
    finally:
        context.close()


def test_text_size_toolbar_by_keyboard(pages: dict[str, tuple[str, int]], browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = _open(context, *pages["article"])
        bigger = page.get_by_role("button", name="Tăng cỡ chữ", exact=True)
        smaller = page.get_by_role("button", name="Giảm cỡ chữ", exact=True)
        status = page.get_by_role("status")
        bigger.wait_for(state="visible")
        assert status.get_attribute("role") == "status"  # a polite live region
        assert bigger.get_attribute("aria-disabled") == "false"
        # Focusing a button tells the size it starts from.
        sync_api.expect(bigger).to_have_accessible_description("Cỡ chữ 100%")

        bigger.focus()
        page.keyboard.press("Enter")
        assert status.text_content() == "Cỡ chữ 110%"
        page.keyboard.press("Space")
        assert status.text_content() == "Cỡ chữ 120%"
        for _ in range(10):  # bounded: the largest size is four steps further
            page.keyboard.press("Enter")
        assert status.text_content() == "Cỡ chữ 160%"
        # At the limit the button says so and keeps the focus (a disabled one would drop it).
        assert bigger.get_attribute("aria-disabled") == "true"
        assert page.evaluate("document.activeElement.dataset.step") == "1"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.dataset.step") == "-1"
        page.keyboard.press("Enter")
        assert status.text_content() == "Cỡ chữ 150%"
        assert bigger.get_attribute("aria-disabled") == "false"
        assert smaller.get_attribute("aria-disabled") == "false"
        sync_api.expect(smaller).to_have_accessible_description("Cỡ chữ 150%")
    finally:
        context.close()


@pytest.mark.parametrize(
    "kind", ["article", "home", "agency", "feeds", "document", "documents", "withdrawn", "missing"]
)
def test_pages_reflow_at_320_css_px(
    pages: dict[str, tuple[str, int]], browser: Any, kind: str
) -> None:
    """320 CSS px is 1280 px at 400 % zoom (WCAG 1.4.10): no horizontal scrolling, and every
    link and button still inside the viewport."""
    context = browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page = _open(context, *pages[kind])
        sizes = ["default"]
        if kind == "article":  # and again with the toolbar's largest text
            page.locator(".toolbar").wait_for(state="visible")
            for _ in range(10):
                if page.locator("[data-step='1']").get_attribute("aria-disabled") == "true":
                    break
                page.locator("[data-step='1']").click()
            sizes.append("largest")
        for size in sizes:
            width = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert width[0] <= width[1], (kind, size, width)
            outside = page.evaluate(OUTSIDE_VIEWPORT, FOCUSABLE)
            assert outside == [], (kind, size)
    finally:
        context.close()


def test_reduced_motion_turns_transitions_off(
    pages: dict[str, tuple[str, int]], browser: Any
) -> None:
    durations = {}
    for motion in ("no-preference", "reduce"):
        context = browser.new_context(reduced_motion=motion)
        try:
            page = _open(context, *pages["article"])
            button = page.locator(".toolbar__button").first
            button.wait_for(state="visible")
            durations[motion] = button.evaluate("el => getComputedStyle(el).transitionDuration")
        finally:
            context.close()
    assert durations["no-preference"] != "0s"  # the check below can fail
    assert durations["reduce"] == "0s"


def test_passages_in_other_languages_keep_their_lang(
    pages: dict[str, tuple[str, int]], browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = _open(context, *pages["article-mixed-language"])
        assert page.evaluate("document.documentElement.lang") == "vi"
        marked = page.eval_on_selector_all(
            ".article__body [lang]", "els => els.map(e => [e.tagName, e.lang, e.textContent])"
        )
        assert marked == [
            ["BLOCKQUOTE", "en", "Every child has the right to learn in a safe school."],
            ["Q", "fr", "L’école pour tous"],
        ]
    finally:
        context.close()


def test_article_follow_block(pages: dict[str, tuple[str, int]], system: System) -> None:
    html = httpx.get(pages["article"][0]).text
    assert 'rel="hub"' not in html  # the feeds name the hub; the page is no WebSub topic
    follow = html[html.index('<section class="follow"') :].split("</section>", 1)[0]
    assert "WebSub" in follow and "trình đọc tin" in follow
    assert f"Theo dõi bản tin của {AGENCY}:" in follow
    assert "Theo dõi chuyên mục Giáo dục:" in follow
    assert follow.count('class="feeds__link"') == 6
