"""An article page in a real browser: the text-size toolbar works under the site's strict CSP
without one violation, the CSP really refuses inline code, and the page reads fine without
JavaScript. Also leaves screenshots in /tmp for a person to look at."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.render.pages import PageRenderer, install_static
from shared.models import Agency, Bulletin
from shared.sanitize import text_to_html
from shared.security_headers import SITE_CSP, SITE_HEADERS
from shared.settings import Settings
from shared.site import article_path, file_for
from shared.storage import LocalStorage
from tests.e2e.conftest import watch_context

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")

SCREENSHOT = Path("/tmp/bantin-article.png")
SCREENSHOT_MOBILE = Path("/tmp/bantin-article-mobile.png")

BODY = """Theo đó, Kế hoạch đề ra 6 nhiệm vụ, giải pháp chủ yếu cần triển khai thực hiện gồm:

Tăng cường sự lãnh đạo, chỉ đạo và quản lý của cấp ủy, chính quyền các cấp; nâng cao hiệu quả \
phối hợp giữa các sở, ngành, các cơ quan có liên quan và cả hệ thống chính trị trong thực hiện \
Nghị quyết số 29-NQ/TW, Kết luận 51 và Nghị quyết 44/NQ-CP ngày 09/6/2014 của Chính phủ;

Đẩy mạnh công tác giáo dục lý tưởng cách mạng, chú trọng giáo dục nhân cách, đạo đức, lối sống \
văn hóa, kỹ năng sống, kiến thức pháp luật và ý thức công dân trong hệ thống giáo dục quốc dân;

Nâng cao chất lượng đào tạo nguồn nhân lực đáp ứng yêu cầu phát triển kinh tế - xã hội của đất \
nước và xu hướng hội nhập quốc tế; tiếp tục phân luồng học sinh sau trung học cơ sở; củng cố và \
nâng cao chất lượng phổ cập giáo dục, xoá mù chữ và xây dựng xã hội học tập;

Nâng cao chất lượng đội ngũ nhà giáo và cán bộ quản lý giáo dục; bảo đảm các điều kiện cơ bản để \
triển khai có hiệu quả Chương trình giáo dục phổ thông và sách giáo khoa mới;

Tại Kế hoạch, UBND tỉnh giao Sở Giáo dục và Đào tạo chủ trì, phối hợp với Ban Tuyên giáo Tỉnh ủy, \
Ủy ban Mặt trận Tổ quốc Việt Nam tỉnh Bắc Kạn, các sở, ban, ngành có liên quan, các cơ quan truyền \
thông trên địa bàn tỉnh tổ chức tuyên truyền, phổ biến, tổ chức nghiên cứu, quán triệt các nội \
dung Kết luận 51, Quyết định 628, Quyết định 1696, Kế hoạch 155 và Kế hoạch này đến toàn thể đội \
ngũ cán bộ quản lý giáo dục, giáo viên, nhân viên của các cơ sở giáo dục./."""


def seed_bulletin() -> Bulletin:
    return Bulletin(
        id=7,
        guid="urn:uuid:4fbfac1c-975a-2018-0000-000000000007",
        slug="ban-hanh-ke-hoach-hanh-dong",
        title=(
            "Ban hành Kế hoạch hành động thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 "
            "của Thủ tướng Chính phủ"
        ),
        summary=(
            "Ngày 30/7/2020, UBND tỉnh ban hành Kế hoạch hành động thực hiện Quyết định số "
            "628/QĐ-TTg ngày 11/5/2020 của Thủ tướng Chính phủ ban hành Kế hoạch thực hiện Kết "
            "luận số 51-KL/TW ngày 30/5/2019 của Ban Bí thư về tiếp tục thực hiện Nghị quyết Hội "
            "nghị Trung ương 8 khóa XI về đổi mới căn bản, toàn diện giáo dục và đào tạo, đáp "
            "ứng yêu cầu công nghiệp hóa, hiện đại hóa trong điều kiện kinh tế thị trường định "
            "hướng xã hội chủ nghĩa và hội nhập quốc tế (tại Quyết định số 1385/QĐ-UBND)."
        ),
        body_format="text",
        body_source=BODY,
        body_html=text_to_html(BODY),
        author="Hồng Nhung",
        category="Giáo dục",
        category_slug="giao-duc",
        language="vi",
        published_at=datetime(2020, 7, 31, 2, 15, tzinfo=UTC),
        updated_at=datetime(2020, 7, 31, 2, 15, tzinfo=UTC),
        revision=1,
        agency=Agency(id=1, slug="ubnd-bac-kan", name="UBND tỉnh Bắc Kạn"),
    )


# What a hole in the sanitiser would put in a page: each line is refused by the CSP.
CONTROL_PAGE = "control.html"
CONTROL_HTML = b"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>c</title>
<script>window.__xss = 1; alert(1)</script></head><body>
<img src="/nowhere.png" onerror="window.__xss = 2; alert(2)" alt="">
<p style="color: rgb(255, 0, 0)">text</p></body></html>"""


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves the rendered site with the security headers the gateway and nginx send."""

    def end_headers(self) -> None:
        for name, value in SITE_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def article_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The seed article rendered into a site directory, served over HTTP on loopback."""
    site = tmp_path_factory.mktemp("site")
    storage = LocalStorage(site)
    install_static(storage)
    bulletin = seed_bulletin()
    renderer = PageRenderer(Settings(public_url="https://bantin.example.gov.vn", data_dir=site))
    path = article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    storage.put(file_for(path), renderer.article(bulletin).encode("utf-8"))
    storage.put(CONTROL_PAGE, CONTROL_HTML)

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: the OS picks a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def body_font_px(page: Any) -> float:
    size = page.eval_on_selector(".article__body p", "el => getComputedStyle(el).fontSize")
    return float(size.removesuffix("px"))


def test_text_size_buttons_change_the_article_and_are_remembered(
    browser: Any, article_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = watch_context(context)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        response = page.goto(article_url)
        assert response is not None
        assert response.headers["content-security-policy"] == SITE_CSP
        bigger = page.get_by_role("button", name="Tăng cỡ chữ")
        smaller = page.get_by_role("button", name="Giảm cỡ chữ")
        sync_api.expect(bigger).to_be_visible()
        start = body_font_px(page)

        bigger.click()
        enlarged = body_font_px(page)
        assert enlarged > start

        smaller.click()
        smaller.click()
        reduced = body_font_px(page)
        assert reduced < start

        bigger.click()
        bigger.click()
        chosen = body_font_px(page)
        assert chosen > start
        assert page.evaluate("localStorage.getItem('bantin.textSize')") == "110"

        page.reload()
        sync_api.expect(bigger).to_be_visible()
        assert body_font_px(page) == pytest.approx(chosen)

        # Clamped: past the largest size the button gives up instead of growing forever.
        for _ in range(20):
            if bigger.is_disabled():
                break
            bigger.click()
        sync_api.expect(bigger).to_be_disabled()
        largest = body_font_px(page)
        assert largest <= start * 1.6 + 0.5
        assert page.get_by_role("status").text_content() == "Cỡ chữ 160%"

        # The lead and byline follow the body; the headline keeps its size.
        lead_px = page.eval_on_selector(".lead", "el => getComputedStyle(el).fontSize")
        assert float(lead_px.removesuffix("px")) == pytest.approx(largest)
        assert errors == []

        # A stored value from elsewhere (hand-edited, older version) is clamped, not trusted.
        page.evaluate("localStorage.setItem('bantin.textSize', '9999')")
        page.reload()
        sync_api.expect(bigger).to_be_disabled()
        assert body_font_px(page) == pytest.approx(largest)
        # The toolbar script (a file from 'self'), the stylesheet and the JSON-LD data block
        # all passed the CSP: not one violation, no dialog, no script error.
        assert page.locator('script[type="application/ld+json"]').count() == 1
        assert watch.violations(page) == []
        assert (watch.dialogs, watch.errors) == ([], [])
    finally:
        context.close()


def test_the_csp_refuses_inline_code_and_the_watch_sees_it(browser: Any, article_url: str) -> None:
    """The control for every "no violation" above: a page served with the site's headers but
    holding inline code, as a sanitiser hole would leave it, runs none of it, and each refusal
    is seen, both as the page's event and in the console."""
    context = browser.new_context()
    watch = watch_context(context)
    try:
        page = context.new_page()
        page.goto(article_url.rsplit("/", 2)[0] + "/" + CONTROL_PAGE)
        page.wait_for_function("window.__cspViolations.length >= 3", timeout=5000)
        # And a DOM sink fed a plain string: Trusted Types refuse it.
        refused = page.evaluate(
            """() => {
              try { document.body.innerHTML = "<b>x</b>"; return null; }
              catch (error) { return error.name; }
            }"""
        )
        assert refused == "TypeError"
        directives = {v["directive"] for v in page.evaluate("window.__cspViolations")}
        assert directives == {
            "script-src-elem",  # the inline <script>
            "script-src-attr",  # onerror=
            "style-src-attr",  # style=
            "require-trusted-types-for",  # innerHTML = string
        }
        assert any("Content Security Policy" in line for line in watch.console)
        assert page.evaluate("window.__xss") is None and watch.dialogs == []
        color = page.evaluate("getComputedStyle(document.querySelector('p')).color")
        assert color != "rgb(255, 0, 0)"
    finally:
        context.close()


def test_page_is_readable_without_javascript(browser: Any, article_url: str) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(article_url)
        # The toolbar would do nothing without its script, so it is not shown at all.
        sync_api.expect(page.locator(".toolbar")).to_be_hidden()
        heading = page.get_by_role("heading", level=1)
        sync_api.expect(heading).to_contain_text("Quyết định số 628/QĐ-TTg")
        first = page.locator(".article__body p").first
        sync_api.expect(first).to_be_visible()
        sync_api.expect(first).to_contain_text("Theo đó, Kế hoạch đề ra 6 nhiệm vụ")
        sync_api.expect(page.locator(".byline")).to_contain_text("Hồng Nhung")
        assert body_font_px(page) >= 16
        box = first.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390  # no sideways scrolling
        page_width = page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= 390
    finally:
        context.close()


def test_screenshots_for_review(browser: Any, article_url: str) -> None:
    for path, viewport, scale in (
        (SCREENSHOT, {"width": 1280, "height": 900}, 1),
        (SCREENSHOT_MOBILE, {"width": 390, "height": 844}, 2),
    ):
        context = browser.new_context(viewport=viewport, device_scale_factor=scale)
        try:
            page = context.new_page()
            page.goto(article_url)
            sync_api.expect(page.get_by_role("button", name="Tăng cỡ chữ")).to_be_visible()
            page.screenshot(path=str(path), full_page=True)
        finally:
            context.close()
        assert path.stat().st_size > 10_000
