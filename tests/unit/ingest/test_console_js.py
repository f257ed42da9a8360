"""console.js in Chromium, under the console's real CSP (Trusted Types included): a paste from
a word processor keeps its paragraphs and drops its styling, plain text with single line
breaks becomes paragraphs, the Markdown toolbar, and the previewed page shows paragraphs.

The pages come from the in-process app (TestClient), handed to the browser through
Playwright's request routing: no server, no port. Skips without Playwright or Debian's
chromium (as the browser tests do).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.ingest.app import create_app
from shared import users
from shared.db import session_scope
from shared.settings import Settings
from tests.unit.ingest.helpers import make_settings, new_agency

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is missing")

ORIGIN = "http://console.test"
PASSWORD = "mot-cau-de-nho-2026"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
# Recorded before any page script runs, as tests/e2e/conftest.py does.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""
PASTE = """([html, plain]) => {
  const area = document.querySelector("textarea[data-body]");
  area.focus();
  const data = new DataTransfer();
  if (html) data.setData("text/html", html);
  if (plain) data.setData("text/plain", plain);
  area.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true,
                                                  cancelable: true}));
  return area.value;
}"""
WORD = (
    "<html xmlns:o='urn:schemas-microsoft-com:office:office'><head><meta charset=utf-8>"
    "<style>p.MsoNormal{color:red;font-family:'Times New Roman'}</style></head><body>"
    "<!--StartFragment--><p class=MsoNormal style='margin:0'><b><span style='font-size:14pt'>"
    "Kế hoạch số 5</span></b><o:p></o:p></p>\n<p class=MsoNormal>Theo đó,   Kế hoạch đề ra\n"
    "6 nhiệm vụ.<o:p></o:p></p><p class=MsoNormal>Dòng một<br>dòng hai</p>"
    "<ul><li>Mục một</li><li>Mục <i>hai</i></li></ul><script>alert(1)</script>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><div>Nơi nhận: UBND tỉnh.</div>"
    "<!--EndFragment--></body></html>"
)
WORD_TEXT = (
    "Kế hoạch số 5\n\nTheo đó, Kế hoạch đề ra 6 nhiệm vụ.\n\nDòng một\ndòng hai\n\n"
    "- Mục một\n- Mục hai\n\nNơi nhận: UBND tỉnh."
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=ORIGIN) as test_client:
        new_agency(settings, "so-van-ban")
        with session_scope(settings) as session:
            link = users.invite(session, "js@example.vn", "so-van-ban", hours=1)
        form = test_client.get(f"/console/invite/{link}")
        csrf = TOKEN.search(form.text)
        assert csrf is not None
        test_client.post(f"/console/invite/{link}", data={
            "csrf_token": csrf[1], "password": PASSWORD, "password_again": PASSWORD,
        })  # fmt: skip
        yield test_client


@pytest.fixture
def page(browser: Any, client: TestClient) -> Iterator[Any]:
    """A page of the signed-in console, every request answered by the app itself."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(CSP_RECORDER)

    posted: list[str] = []

    def answer(route: Any) -> None:
        request = route.request
        if request.method == "POST":
            posted.append(request.post_data_buffer.decode("utf-8", "replace"))
        response = client.request(
            request.method, request.url.removeprefix(ORIGIN),
            content=request.post_data_buffer,
            headers={k: v for k, v in request.headers.items() if k.lower() == "content-type"},
            follow_redirects=False,
        )  # fmt: skip
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        route.fulfill(status=response.status_code, headers=headers, body=response.content)

    context.route(f"{ORIGIN}/**", answer)
    opened = context.new_page()
    opened.posted = posted  # the bodies of the posts the browser sent, in order
    opened.goto(f"{ORIGIN}/console/bulletins/new")
    yield opened
    assert opened.evaluate("window.__cspViolations") == []
    context.close()


def test_a_word_processor_paste_keeps_paragraphs_and_drops_styling(page: Any) -> None:
    value = page.evaluate(PASTE, [WORD, "plain text that must not be used"])
    assert value == WORD_TEXT


def test_plain_text_lines_become_paragraphs_and_preview_shows_them(page: Any) -> None:
    page.get_by_label("Tiêu đề").fill("Ba đoạn")
    value = page.evaluate(PASTE, ["", "Đoạn một\r\nĐoạn hai\n\n\nĐoạn ba  "])
    assert value == "Đoạn một\n\nĐoạn hai\n\nĐoạn ba"
    page.get_by_role("button", name="Xem trước", exact=True).click()
    frame = page.frame_locator('iframe[title="Xem trước trên máy tính"]')
    paragraphs = frame.locator(".article__body p")
    sync_api.expect(paragraphs).to_have_text(["Đoạn một", "Đoạn hai", "Đoạn ba"])
    # The preview runs the page's own script: its text-size toolbar is there.
    sync_api.expect(frame.get_by_role("button", name="Tăng cỡ chữ")).to_be_visible()


def test_the_markdown_toolbar_shows_with_markdown_and_wraps_the_selection(page: Any) -> None:
    toolbar = page.get_by_role("group", name="Định dạng Markdown")
    sync_api.expect(toolbar).to_be_hidden()
    page.get_by_label("Markdown", exact=True).check()
    sync_api.expect(toolbar).to_be_visible()
    body = page.get_by_role("textbox", name="Nội dung")
    body.fill("Một từ quan trọng")
    body.evaluate("area => area.setSelectionRange(7, 17)")
    toolbar.get_by_role("button", name="Đậm").click()
    sync_api.expect(body).to_have_value("Một từ **quan trọng**")
    body.evaluate("area => area.setSelectionRange(0, 0)")
    toolbar.get_by_role("button", name="Danh sách").click()
    sync_api.expect(body).to_have_value("- Một từ **quan trọng**")
    # In Markdown a plain-text paste is left to the browser (its line breaks may be
    # Markdown); a synthetic event's default inserts nothing, so nothing changes.
    body.fill("")
    assert page.evaluate(PASTE, ["", "- a\n- b"]) == ""


def test_a_second_press_while_the_post_is_on_its_way_is_dropped(page: Any) -> None:
    page.get_by_label("Tiêu đề").fill("Bấm hai lần")
    page.get_by_role("textbox", name="Nội dung").fill("Một đoạn.")
    # Both presses in one task: the second comes while the first post is on its way.
    prevented = page.evaluate("""() => {
      const button = [...document.querySelectorAll("button[name=action]")]
        .find((b) => b.value === "preview");
      const seen = [];
      window.addEventListener("submit", (event) => seen.push(event.defaultPrevented));
      button.click();
      button.click();
      return seen;
    }""")
    assert prevented == [False, True]
    frame = page.frame_locator('iframe[title="Xem trước trên máy tính"]')
    sync_api.expect(frame.locator("h1")).to_have_text("Bấm hai lần")
    assert len(page.posted) == 1
    # The pressed button's name and value went with the post.
    assert 'name="action"\r\n\r\npreview' in page.posted[0]
