"""The web console in Chromium, used the way a clerk uses it (issue 10, Done when 1 and 3).

The system is started once for the module, with an agency of its own that already has a few
bulletins (published through the API). Then:

- the whole life of the seed sample through the console: an operator invites the clerk with
  `bantin user invite`, the clerk opens the link, sets a password, writes the sample (typing
  the body), previews it, publishes it and waits on the status line until it is online; the
  public page shows its title, date, lead and author and the agency's feeds carry it; the
  clerk corrects it (the page and the feeds follow, same guid) and withdraws it with a notice
  (the page answers 410 with the notice, the feeds drop it);
- the same with the keyboard only: setting the password, signing in, writing and publishing
  a short bulletin with Tab, typing and Enter;
- every console page (sign-in and its error and 429, set password and its error and used
  link, list, search, editor, preview, validation errors, status, edit, edit preview,
  conflict, withdraw, withdrawn edit, 404, expired form, "already published" question) is
  scanned by axe-core (no serious or critical violation), keeps to the console's CSP, and at
  390 CSS px (a phone) has no horizontal scrolling;
- what clerks do besides: double-click "Đăng bản tin", press Back and publish the refilled
  form again, press Back after signing out, work with JavaScript off, schedule from a
  browser in another time zone, paste from a word processor with Ctrl+V, format Markdown
  with the toolbar by keyboard, follow a bookmark (or a forged `next`) through sign-in.

The time from pressing "Đăng bản tin" (and "Lưu bản sửa", "Gỡ bản tin") to the status line
saying so is printed (run with -s to see it), never asserted.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import feedparser
import httpx
import pytest

from services.cli.client import load_bulletin, publish
from shared.security_headers import CONSOLE_CSP
from shared.testing import System, eventually, start_system, stop_system
from tests.e2e.conftest import Watch, watch_context
from tests.e2e.test_accessibility import AXE_OPTIONS, FAILING_IMPACTS

pytestmark = pytest.mark.e2e

sync_api = pytest.importorskip("playwright.sync_api")
axe_sync = pytest.importorskip("axe_playwright_python.sync_playwright")
expect = sync_api.expect

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEED = EXAMPLES / "000_4fbfac1c975a2018.txt"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
AGENCY_NAME = "Sở Giáo dục và Đào tạo tỉnh Thử Nghiệm"
AGENCY_SLUG = "so-gd-thu-nghiem"
CATEGORY = "Giáo dục"
PASSWORD = "Hoa-sen-no-2026"  # long enough (MIN_PASSWORD_LENGTH is 10)

# Bounds on waiting, not measures of speed: rendering a page and rebuilding the feeds take
# well under these on a loaded two-core machine.
ONLINE_MS = 60_000
PUBLIC_SECONDS = 60.0
# The sign-in page, with or without the page to return to (`next`, which holds slashes).
SIGN_IN_PAGE = re.compile(r"/console/sign-in(\?.*)?$")
# A bulletin's console page (where publishing, saving and withdrawing lead).
STATUS_PAGE = re.compile(r"/console/bulletins/\d+$")
# Most Tab presses any console form needs to reach a control (header links, toolbar...).
TAB_LIMIT = 80

# Every time from pressing publish (save, withdraw) to the state shown, printed at the end.
MEASURED: list[tuple[str, float]] = []


@dataclass
class Agency:
    name: str
    slug: str
    key: str


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(tmp_path_factory.mktemp("bantin-console"))
    yield running
    stop_system(running)
    for what, seconds in MEASURED:
        print(f"\ntime from pressing the button ({what}): {seconds:.2f} s")


@pytest.fixture(scope="module")
def agency(system: System) -> Agency:
    """An agency of the test's own, with bulletins already (so the list has rows and the
    search something to find besides the console's own)."""
    key = system.create_agency(AGENCY_NAME, AGENCY_SLUG)
    for sample in sorted(EXAMPLES.glob("*.txt"))[:3]:
        bulletin = load_bulletin(sample, TZ)
        bulletin["category"] = CATEGORY
        publish(bulletin, api_url=system.ingest_url, key=key)
    return Agency(AGENCY_NAME, AGENCY_SLUG, key)


def clerk_context(browser: Any, width: int) -> Any:
    """A browser as a clerk in Vietnam has it: Vietnamese, Vietnam's time zone."""
    context = browser.new_context(
        viewport={"width": width, "height": 900}, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh"
    )
    context.add_init_script(STATUS_RECORDER)
    return context


def invite(system: System, email: str, slug: str) -> str:
    """`bantin user invite`, as an operator runs it: the link is stdout's last line."""
    done = system.cli("user", "invite", email, "--agency", slug)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1].strip()
    assert "/console/invite/" in link, done.stdout
    return link


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def new_email() -> str:
    return f"can-bo-{uuid.uuid4().hex[:8]}@so-gd.example.vn"


def today() -> str:
    return datetime.now(TZ).strftime("%d/%m/%Y")


def accept_invite(page: Any, link: str, agency: Agency) -> None:
    """Open the sign-in link, set the password, land signed in on the list."""
    page.goto(link)
    page.get_by_label("Mật khẩu mới").fill(PASSWORD)
    page.get_by_label("Nhập lại mật khẩu").fill(PASSWORD)
    page.get_by_role("button", name="Đặt mật khẩu").click()
    page.wait_for_url("**/console/bulletins")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Bản tin của {agency.name}")


def fill_editor(page: Any, bulletin: dict[str, Any], *, type_body: bool) -> None:
    page.get_by_label("Tiêu đề").fill(bulletin["title"])
    page.get_by_label("Tóm tắt").fill(bulletin.get("summary") or "")
    body = page.get_by_role("textbox", name="Nội dung")
    body.fill("")
    if type_body:  # key by key, the way a clerk writes (Enter makes the paragraph breaks)
        body.press_sequentially(bulletin["body"])
    else:
        body.fill(bulletin["body"])
    page.get_by_label("Tác giả").fill(bulletin.get("author") or "")
    page.get_by_label("Chuyên mục").fill(bulletin.get("category") or "")


# Installed before any page script: when (wall clock, ms) the status line first showed each
# label, so the time measured is the page's own, not that of the test's polling.
STATUS_RECORDER = """
(() => {
  window.__statusSeen = {};
  const note = () => {
    const el = document.getElementById("trang-thai");
    const text = el ? el.textContent.trim() : "";
    if (text && !(text in window.__statusSeen)) window.__statusSeen[text] = Date.now();
  };
  document.addEventListener("DOMContentLoaded", () => {
    note();
    const el = document.getElementById("trang-thai");
    const what = {childList: true, characterData: true, subtree: true};
    if (el) new MutationObserver(note).observe(el, what);
  });
})();
"""


def wait_label(page: Any, label: str, what: str, pressed: float | None) -> None:
    """Until the status line says `label`; notes how long after `pressed` (time.time()) it
    first did."""
    expect(page.locator("#trang-thai")).to_contain_text(label, timeout=ONLINE_MS)
    if pressed is not None:
        seen: dict[str, int] = page.evaluate("window.__statusSeen")
        first = min(ms for text, ms in seen.items() if label in text)
        MEASURED.append((what, first / 1000 - pressed))


def wait_online(page: Any, what: str, pressed: float | None = None) -> str:
    """Until the status line says the page is online; returns the public URL it links."""
    wait_label(page, "Đã đăng", what, pressed)
    link = page.get_by_role("link", name="Xem trang đã đăng")
    expect(link).to_be_visible()
    href: str = link.get_attribute("href")
    return href


def feed_entries(system: System, slug: str, kind: str) -> list[Any]:
    answer = httpx.get(f"{system.gateway_url}/feeds/agency/{slug}.{kind}", timeout=10)
    assert answer.status_code == 200, (kind, answer.status_code)
    parsed = feedparser.parse(answer.content)
    assert parsed.bozo == 0, (kind, parsed.bozo_exception)
    return list(parsed.entries)


def wait_entry(system: System, slug: str, kind: str, url: str, title: str) -> Any:
    """Until the agency's feed lists the page at `url` under `title`; returns the entry."""

    def found() -> Any | None:
        entry = next((e for e in feed_entries(system, slug, kind) if e.link == url), None)
        return entry if entry is not None and entry.title == title else None

    return eventually(found, f"{title!r} in the agency's {kind} feed", PUBLIC_SECONDS)


# ---------------------------------------------------------------------------------------------
# Done when 1: the clerk's whole flow


def test_clerk_publishes_corrects_and_withdraws_the_seed_sample(
    system: System, agency: Agency, browser: Any
) -> None:
    seed = load_bulletin(SEED, TZ)
    seed["category"] = CATEGORY
    email = new_email()
    link = invite(system, email, agency.slug)
    context = clerk_context(browser, 1280)
    watch = watch_context(context)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        assert page.url.startswith(origin(link))

        # Write the sample.
        page.get_by_role("link", name="Viết bản tin mới").click()
        page.wait_for_url("**/console/bulletins/new")
        fill_editor(page, seed, type_body=True)
        page.get_by_label("Đăng ngay").check()

        # Preview: the real article page, on a computer and at phone width.
        page.get_by_role("button", name="Xem trước", exact=True).click()
        for title in ("Xem trước trên máy tính", "Xem trước trên điện thoại"):
            frame = page.frame_locator(f'iframe[title="{title}"]')
            expect(frame.locator("h1")).to_have_text(seed["title"])
            expect(frame.locator(".byline__name")).to_have_text(seed["author"])
            expect(frame.locator(".lead")).to_have_text(seed["summary"])
            # The page's own script runs in the preview: its text-size toolbar shows.
            expect(frame.get_by_role("button", name="Tăng cỡ chữ")).to_be_visible()
        phone = page.locator('iframe[title="Xem trước trên điện thoại"]').bounding_box()
        assert phone is not None and phone["width"] <= 390, phone
        # The preview kept what was written.
        expect(page.get_by_label("Tiêu đề")).to_have_value(seed["title"])
        expect(page.get_by_role("textbox", name="Nội dung")).to_have_value(seed["body"])

        # Publish, and watch the status line until the page is online.
        day_before = today()
        pressed = time.time()
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)
        console_page = page.url
        expect(page.get_by_role("heading", level=1)).to_have_text(seed["title"])
        # For the report: when the public page itself first answers (the console's label
        # follows at its next poll, every 100 ms at first).
        address = page.locator(".facts__url").inner_text().strip()
        eventually(
            lambda: httpx.get(address, timeout=10).status_code == 200, "the page", PUBLIC_SECONDS
        )
        MEASURED.append(("seed sample, public page answers 200", time.time() - pressed))
        url = wait_online(page, "seed sample, console says Đã đăng", pressed)
        assert url == address
        assert url.startswith(system.gateway_url + "/"), url
        # The list shows it first (newest first), linked to this page.
        page.get_by_role("link", name="Danh sách bản tin").click()
        first = page.locator("table tbody tr").first
        expect(first.get_by_role("link")).to_have_text(seed["title"])
        first.get_by_role("link").click()
        page.wait_for_url(console_page)

        # The public page, as a reader sees it.
        reader = context.new_page()
        response = reader.goto(url)
        assert response is not None and response.status == 200
        expect(reader.locator("h1")).to_have_text(seed["title"])
        shown_date = reader.locator(".article__date time").first.inner_text()
        assert shown_date in {day_before, today()}, shown_date
        expect(reader.locator(".lead")).to_have_text(seed["summary"])
        expect(reader.locator(".byline__name")).to_have_text(seed["author"])
        assert "Tăng cường sự lãnh đạo, chỉ đạo" in reader.locator(".article__body").inner_text()

        # The agency's feeds carry it.
        guids = {}
        for kind in ("rss", "atom"):
            guids[kind] = wait_entry(system, agency.slug, kind, url, seed["title"]).id

        # Correct it: a new title and a changed sentence.
        corrected_title = seed["title"] + " (đính chính)"
        old_sentence = "Theo đó, Kế hoạch đề ra 6 nhiệm vụ"
        new_sentence = "Theo đó, Kế hoạch đề ra sáu nhiệm vụ"
        assert old_sentence in seed["body"]
        page.get_by_role("link", name="Sửa bản tin").click()
        page.wait_for_url("**/edit")
        expect(page.get_by_label("Tiêu đề")).to_have_value(seed["title"])
        page.get_by_label("Tiêu đề").fill(corrected_title)
        body = page.get_by_role("textbox", name="Nội dung")
        body.fill(body.input_value().replace(old_sentence, new_sentence))
        pressed = time.time()
        page.get_by_role("button", name="Lưu bản sửa").click()
        page.wait_for_url(console_page)
        expect(page.get_by_role("heading", level=1)).to_have_text(corrected_title)
        # "Đã đăng" again once the correction itself is online; a correction keeps the address.
        assert wait_online(page, "correction, console says Đã đăng", pressed) == url

        def corrected_page() -> bool:
            html = httpx.get(url, timeout=10).text
            return corrected_title in html and new_sentence in html

        eventually(corrected_page, "the corrected public page", PUBLIC_SECONDS)
        reader.reload()
        expect(reader.locator("h1")).to_have_text(corrected_title)
        expect(reader.locator(".article__updated")).to_contain_text("Cập nhật")
        for kind in ("rss", "atom"):
            entry = wait_entry(system, agency.slug, kind, url, corrected_title)
            assert entry.id == guids[kind]  # the same item, not a new one

        # Withdraw it, with a public notice.
        notice = "Bản tin được gỡ để chỉnh sửa số liệu; xin xem bản tin thay thế."
        page.get_by_role("link", name="Gỡ bản tin").click()
        page.wait_for_url("**/withdraw")
        page.get_by_label("Thông báo công khai (không bắt buộc)").fill(notice)
        pressed = time.time()
        page.get_by_role("button", name="Gỡ bản tin").click()
        page.wait_for_url(console_page)
        wait_label(page, "Đã gỡ", "withdrawal, console says Đã gỡ", pressed)
        expect(page.get_by_role("link", name="Sửa bản tin")).to_have_count(0)
        expect(page.get_by_role("link", name="Gỡ bản tin")).to_have_count(0)

        eventually(
            lambda: httpx.get(url, timeout=10).status_code == 410, "the 410 page", PUBLIC_SECONDS
        )
        # A reader who never saw the page (the live page may be cached for 30 s).
        late_context = clerk_context(browser, 1280)
        late_watch = watch_context(late_context)
        try:
            late = late_context.new_page()
            response = late.goto(url)
            assert response is not None and response.status == 410
            expect(late.locator("main")).to_contain_text(notice)
            assert corrected_title in late.locator(".gone__headline").inner_text()
            assert_clean(late_watch, [late])
        finally:
            late_context.close()
        for kind in ("rss", "atom"):

            def gone(kind: str = kind) -> bool:
                entries = feed_entries(system, agency.slug, kind)
                return all(e.link != url and e.id != guids[kind] for e in entries)

            eventually(gone, f"the withdrawn bulletin gone from the {kind} feed", PUBLIC_SECONDS)

        assert_clean(watch, [page, reader])
    finally:
        context.close()


def assert_clean(watch: Watch, pages: list[Any]) -> None:
    """No CSP violation (in any page or frame), no dialog, no script error."""
    violations = [v for page in pages for frame in page.frames for v in frame_violations(frame)]
    assert violations + watch.console == [], violations + watch.console
    assert (watch.dialogs, watch.errors) == ([], [])


def frame_violations(frame: Any) -> list[Any]:
    try:
        found: list[Any] = frame.evaluate("window.__cspViolations || []")
    except sync_api.Error:  # a frame that went away meanwhile
        return []
    return found


# ---------------------------------------------------------------------------------------------
# Keyboard only


# The focused element, if the browser draws no focus indicator on it (no outline, no shadow).
UNMARKED_FOCUS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  // The focus is inside the control's own UI (a date field's calendar button): not :focus,
  // and the browser draws that button's ring itself.
  if (!el.matches(":focus")) return null;
  const s = getComputedStyle(el);
  const outline = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0;
  return outline || s.boxShadow !== "none" ? null : el.outerHTML.slice(0, 120);
}"""
# Elements the keyboard reached that showed no focus indicator, across the keyboard test.
UNMARKED: list[str] = []


def tab_to(page: Any, target: Any) -> None:
    """Press Tab until `target` has the focus (bounded), noting every element passed on the
    way that shows no focus indicator."""
    for _ in range(TAB_LIMIT):
        page.keyboard.press("Tab")
        if (unmarked := page.evaluate(UNMARKED_FOCUS)) and unmarked not in UNMARKED:
            UNMARKED.append(unmarked)
        if target.evaluate("el => el === document.activeElement"):
            return
    where = page.evaluate("document.activeElement && document.activeElement.outerHTML")
    raise AssertionError(f"{TAB_LIMIT} Tabs never reached {target}; focus is on {where}")


def test_keyboard_only_sign_in_and_publish(system: System, agency: Agency, browser: Any) -> None:
    email = new_email()
    link = invite(system, email, agency.slug)
    title = "Thông báo lịch tiếp công dân tháng 12"
    context = clerk_context(browser, 1280)
    watch = watch_context(context)
    try:
        # Set the password from the sign-in link.
        page = context.new_page()
        page.goto(link)
        tab_to(page, page.get_by_label("Mật khẩu mới"))
        page.keyboard.type(PASSWORD)
        tab_to(page, page.get_by_label("Nhập lại mật khẩu"))
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/bulletins")
        page.close()
        context.clear_cookies()  # a new visit: signed out

        # Sign in.
        page = context.new_page()
        page.goto(origin(link) + "/console/")
        page.wait_for_url(SIGN_IN_PAGE)
        tab_to(page, page.get_by_label("Thư điện tử"))
        page.keyboard.type(email)
        tab_to(page, page.get_by_label("Mật khẩu", exact=True))
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/bulletins")

        # Write and publish a short bulletin.
        tab_to(page, page.get_by_role("link", name="Viết bản tin mới"))
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/bulletins/new")
        # Sent empty first: the errors take the focus, and each one leads to its field.
        tab_to(page, page.get_by_role("button", name="Đăng bản tin", exact=True))
        with page.expect_navigation() as refused:
            page.keyboard.press("Enter")
        assert refused.value is not None and refused.value.status == 422
        summary = page.get_by_role("alert")
        expect(summary).to_be_focused()
        title_error = summary.get_by_role("link").first
        tab_to(page, title_error)
        page.keyboard.press("Enter")
        expect(page.get_by_label("Tiêu đề")).to_be_focused()
        page.keyboard.type(title)
        tab_to(page, page.get_by_label("Tóm tắt"))
        page.keyboard.type("Lịch tiếp công dân định kỳ của lãnh đạo Sở trong tháng 12.")
        tab_to(page, page.get_by_role("textbox", name="Nội dung"))
        page.keyboard.type("Lãnh đạo Sở tiếp công dân vào thứ Năm hằng tuần.")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")
        page.keyboard.type("Địa điểm: trụ sở Sở Giáo dục và Đào tạo.")
        tab_to(page, page.get_by_label("Tác giả"))
        page.keyboard.type("Văn phòng Sở")
        publish_button = page.get_by_role("button", name="Đăng bản tin", exact=True)
        tab_to(page, publish_button)
        pressed = time.time()
        page.keyboard.press("Enter")
        page.wait_for_url(STATUS_PAGE)
        expect(page.get_by_role("heading", level=1)).to_have_text(title)
        url = wait_online(page, "short bulletin, keyboard", pressed)

        # The link to the public page is reachable and works from the keyboard too.
        tab_to(page, page.get_by_role("link", name="Xem trang đã đăng"))
        page.keyboard.press("Enter")
        page.wait_for_url(url)
        expect(page.locator("h1")).to_have_text(title)
        assert_clean(watch, [page])
        assert UNMARKED == []  # every control the keyboard reached showed where the focus was
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------
# Done when 3: axe-core on every console page, no horizontal scrolling at 390 px

# The horizontal overflow of the document, and the elements that stick out past the right edge.
OVERFLOW = """() => {
  const root = document.documentElement;
  const width = root.clientWidth;
  const wide = [...document.querySelectorAll("body *")]
    .filter((el) => el.getClientRects().length > 0)
    .filter((el) => el.getBoundingClientRect().right > width + 0.5)
    .map((el) => el.outerHTML.slice(0, 120));
  return {scrollWidth: root.scrollWidth, clientWidth: width, wide: wide.slice(0, 5)};
}"""


@dataclass
class Scan:
    """axe-core, the CSP and the page width, checked on each console page as the walk
    reaches it; findings are kept so one run reports every page at once."""

    axe: Any
    scanned: list[str] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)
    lesser: dict[str, Any] = field(default_factory=dict)  # moderate and minor: shown, not failed

    def check(self, name: str, page: Any) -> None:
        page.wait_for_load_state("load")
        for frame in page.frames[1:]:  # the previews: axe must run inside them to scan them
            frame.evaluate(self.axe.axe_script)
        results = self.axe.run(page, options=AXE_OPTIONS)
        serious = [
            {
                "rule": violation["id"],
                "impact": violation["impact"],
                "help": violation["help"],
                "nodes": [
                    {"target": node["target"], "html": node["html"][:160]}
                    for node in violation["nodes"][:5]
                ],
            }
            for violation in results.response["violations"]
            if violation["impact"] in FAILING_IMPACTS
        ]
        if serious:
            self.findings[f"{name}: axe"] = serious
        lesser = [(v["id"], v["impact"], len(v["nodes"])) for v in results.response["violations"]]
        if lesser := [found for found in lesser if found[1] not in FAILING_IMPACTS]:
            self.lesser[name] = lesser
        overflow = page.evaluate(OVERFLOW)
        if overflow["scrollWidth"] > overflow["clientWidth"]:
            self.findings[f"{name}: horizontal scrolling"] = overflow
        if violations := [v for frame in page.frames for v in frame_violations(frame)]:
            self.findings[f"{name}: CSP"] = violations
        self.scanned.append(name)


def goto(page: Any, url: str, status: int) -> Any:
    response = page.goto(url)
    assert response is not None and response.status == status, (url, response and response.status)
    return response


@pytest.mark.timeout(600)
@pytest.mark.parametrize("width", [1280, 390])
def test_every_console_page_passes_axe_and_fits_the_width(
    system: System, agency: Agency, browser: Any, width: int
) -> None:
    email = new_email()
    link = invite(system, email, agency.slug)
    base = origin(link) + "/console"
    context = clerk_context(browser, width)
    watch = watch_context(context)
    scan = Scan(axe_sync.Axe())
    try:
        page = context.new_page()
        # Signed out.
        response = goto(page, base + "/", 200)
        page.wait_for_url(SIGN_IN_PAGE)
        # The CSP the pages are checked against is the console's own (no violation means
        # something only under it).
        assert response.headers["content-security-policy"] == CONSOLE_CSP
        scan.check("sign-in", page)
        page.get_by_label("Thư điện tử").fill(email)
        page.get_by_label("Mật khẩu", exact=True).fill("sai-mat-khau-roi")
        page.get_by_role("button", name="Đăng nhập").click()
        expect(page.get_by_role("alert")).to_contain_text("Thư điện tử hoặc mật khẩu không đúng")
        scan.check("sign-in, wrong password", page)

        # Past the failed sign-ins allowed for one address, the form is refused for a while.
        locked = new_email()
        for _ in range(20):  # bounded; the limit is 5 failures an address by default
            page.get_by_label("Thư điện tử").fill(locked)
            page.get_by_label("Mật khẩu", exact=True).fill("sai-mat-khau-roi")
            with page.expect_navigation() as attempt:
                page.get_by_role("button", name="Đăng nhập").click()
            if attempt.value is not None and attempt.value.status == 429:
                break
        assert attempt.value is not None and attempt.value.status == 429
        scan.check("sign-in, rate limited (429)", page)

        goto(page, link, 200)
        scan.check("set password (invite)", page)
        page.get_by_label("Mật khẩu mới").fill("ngan")
        page.get_by_label("Nhập lại mật khẩu").fill("ngan")
        page.get_by_role("button", name="Đặt mật khẩu").click()
        expect(page.get_by_role("alert").first).to_be_visible()
        scan.check("set password, too short", page)
        page.get_by_label("Mật khẩu mới").fill(PASSWORD)
        page.get_by_label("Nhập lại mật khẩu").fill(PASSWORD)
        page.get_by_role("button", name="Đặt mật khẩu").click()
        page.wait_for_url("**/console/bulletins")
        goto(page, link, 404)  # the link works once
        scan.check("set password, link already used (404)", page)
        goto(page, base + "/bulletins", 200)

        # The list, with the agency's bulletins, and a search without diacritics.
        expect(page.get_by_role("table")).to_be_visible()
        expect(page.get_by_role("row")).not_to_have_count(0)
        scan.check("list", page)
        page.get_by_label("Tìm theo tiêu đề").fill("ke hoach")
        page.get_by_role("button", name="Tìm", exact=True).click()
        page.wait_for_url(re.compile(r"[?&]q="))
        expect(page.get_by_role("table")).to_contain_text("Kế hoạch")
        scan.check("list, searched", page)

        # The editor: empty, previewed, refused.
        page.get_by_role("link", name="Viết bản tin mới").click()
        page.wait_for_url("**/console/bulletins/new")
        scan.check("new bulletin", page)
        bulletin = load_bulletin(SEED, TZ)
        bulletin.update(title=f"Kế hoạch kiểm tra ({width} px)", category=CATEGORY)
        fill_editor(page, bulletin, type_body=False)
        page.get_by_role("button", name="Xem trước", exact=True).click()
        preview = page.frame_locator('iframe[title="Xem trước trên điện thoại"]')
        expect(preview.locator("h1")).to_have_text(bulletin["title"])
        scan.check("new bulletin, previewed", page)
        page.get_by_label("Tiêu đề").fill("")
        with page.expect_navigation() as refused:
            page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        assert refused.value is not None and refused.value.status == 422
        expect(page.get_by_role("alert").first).to_be_visible()
        scan.check("new bulletin, validation errors", page)

        # Published: the status page, while processing and once online.
        page.get_by_label("Tiêu đề").fill(bulletin["title"])
        pressed = time.time()
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)
        status_url = page.url
        scan.check("bulletin status, just published", page)
        wait_online(page, f"axe walk at {width} px", pressed)
        scan.check("bulletin status, online", page)

        # Edit, and a conflict: a second tab saves first.
        page.get_by_role("link", name="Sửa bản tin").click()
        page.wait_for_url("**/edit")
        edit_url = page.url
        scan.check("edit", page)
        page.get_by_role("button", name="Xem trước", exact=True).click()
        expect(preview.locator("h1")).to_have_text(bulletin["title"])
        scan.check("edit, previewed", page)
        other = context.new_page()
        goto(other, edit_url, 200)
        other.get_by_label("Tiêu đề").fill(bulletin["title"] + " – bản của đồng nghiệp")
        other.get_by_role("button", name="Lưu bản sửa").click()
        other.wait_for_url(status_url)
        other.close()
        page.get_by_label("Tiêu đề").fill(bulletin["title"] + " – bản của tôi")
        with page.expect_navigation() as conflict:
            page.get_by_role("button", name="Lưu bản sửa").click()
        assert conflict.value is not None and conflict.value.status == 409
        expect(page.get_by_role("alert").first).to_contain_text("Bản tin đã được người khác sửa")
        expect(page.get_by_label("Tiêu đề")).to_have_value(bulletin["title"] + " – bản của tôi")
        scan.check("edit, conflict", page)
        # Having looked, the clerk saves their text on purpose: it is the new version.
        page.get_by_role("button", name="Lưu bản sửa").click()
        page.wait_for_url(status_url)
        expect(page.get_by_role("heading", level=1)).to_have_text(
            bulletin["title"] + " – bản của tôi"
        )

        # Withdraw: the confirmation, then the withdrawn status.
        goto(page, status_url, 200)
        page.get_by_role("link", name="Gỡ bản tin").click()
        page.wait_for_url("**/withdraw")
        scan.check("withdraw confirmation", page)
        page.get_by_role("button", name="Gỡ bản tin").click()
        page.wait_for_url(status_url)
        expect(page.locator("#trang-thai")).to_contain_text("Đã gỡ", timeout=ONLINE_MS)
        scan.check("bulletin status, withdrawn", page)
        goto(page, edit_url, 409)
        scan.check("edit, withdrawn (409)", page)

        # A page that is not there, and a form whose CSRF token was lost.
        goto(page, base + "/bulletins/987654321", 404)
        scan.check("404", page)
        goto(page, base + "/bulletins/new", 200)
        page.locator("input[name=csrf_token]").evaluate("el => { el.value = 'mat-roi'; }")
        page.get_by_label("Tiêu đề").fill("Không được lưu")
        page.get_by_role("textbox", name="Nội dung").fill("Không được lưu.")
        with page.expect_navigation() as expired:
            page.get_by_role("button", name="Xem trước", exact=True).click()
        assert expired.value is not None and expired.value.status == 403
        scan.check("403 form expired", page)

        # Signing out ends on the sign-in page.
        goto(page, base + "/bulletins", 200)
        page.get_by_role("button", name="Đăng xuất").click()
        page.wait_for_url(SIGN_IN_PAGE)

        for name, lesser in scan.lesser.items():
            print(f"\naxe, below serious, at {width} px, {name}: {lesser}")
        assert scan.findings == {}, json.dumps(scan.findings, ensure_ascii=False, indent=1)
        assert len(set(scan.scanned)) == 21, scan.scanned
        assert watch.console == [] and (watch.dialogs, watch.errors) == ([], [])
    finally:
        context.close()


def write_short(page: Any, base: str, title: str) -> None:
    goto(page, base + "/console/bulletins/new", 200)
    page.get_by_label("Tiêu đề").fill(title)
    page.get_by_role("textbox", name="Nội dung").fill("Một đoạn nội dung.")


def count_titled(context: Any, base: str, title: str) -> int:
    """How many of the agency's bulletins the console's search finds under `title` (in a tab
    of its own, so the page under test stays where it is)."""
    page = context.new_page()
    try:
        goto(page, f"{base}/console/bulletins?q={title}", 200)
        rows = page.locator("table tbody tr")
        titles: list[str] = rows.locator("td:first-child").all_inner_texts()
    finally:
        page.close()
    return sum(1 for shown in titles if shown.strip() == title)


def test_a_double_click_on_publish_makes_one_bulletin(
    system: System, agency: Agency, browser: Any
) -> None:
    link = invite(system, new_email(), agency.slug)
    base = origin(link)
    title = f"Thông báo bấm đúp {uuid.uuid4().hex[:6]}"
    context = clerk_context(browser, 1280)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        write_short(page, base, title)
        page.get_by_role("button", name="Đăng bản tin", exact=True).dblclick()
        page.wait_for_url(STATUS_PAGE)
        wait_online(page, "double click", None)
        assert count_titled(context, base, title) == 1
    finally:
        context.close()


def test_publishing_the_form_again_after_back_makes_no_second_bulletin(
    system: System, agency: Agency, browser: Any
) -> None:
    """A clerk publishes, presses the browser's Back button and finds the editor with their
    text still in it (Chromium restores a form's fields on Back), then presses "Đăng bản
    tin" again: that is the same form resubmitted, and must not make a second bulletin
    without asking. Whatever the console shows instead (the bulletin it already made, or a
    question) is a console page: axe, CSP and 390 px are checked on it."""
    link = invite(system, new_email(), agency.slug)
    base = origin(link)
    title = f"Thông báo gửi lại {uuid.uuid4().hex[:6]}"
    context = clerk_context(browser, 1280)
    scan = Scan(axe_sync.Axe())
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        write_short(page, base, title)
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)
        first = urlsplit(page.url).path
        wait_online(page, "before Back", None)
        page.go_back()
        page.wait_for_url("**/console/bulletins/new")
        if page.get_by_label("Tiêu đề").input_value() == title:  # the text came back
            with page.expect_navigation() as again:
                page.get_by_role("button", name="Đăng bản tin", exact=True).click()
            assert again.value is not None
            if STATUS_PAGE.search(page.url):
                assert urlsplit(page.url).path == first, "a second bulletin"
            else:  # a question, pointing at the bulletin already made
                expect(page.locator(f'main a[href$="{first}"]').first).to_be_visible()
                for width in (1280, 390):
                    page.set_viewport_size({"width": width, "height": 900})
                    scan.check(f"publish again, asked ({again.value.status}), {width} px", page)
                assert scan.findings == {}, json.dumps(scan.findings, ensure_ascii=False)
                assert count_titled(context, base, title) == 1
                # The clerk who does want a second copy gets it, with the same text.
                page.get_by_role("button", name="Vẫn đăng thêm một bản tin").click()
                page.wait_for_url(STATUS_PAGE)
                assert urlsplit(page.url).path != first
                expect(page.get_by_role("heading", level=1)).to_have_text(title)
                assert count_titled(context, base, title) == 2
                return
        assert count_titled(context, base, title) == 1
    finally:
        context.close()


def test_after_signing_out_back_shows_no_signed_in_page(
    system: System, agency: Agency, browser: Any
) -> None:
    """On a shared office computer: after "Đăng xuất", the Back button must not bring the
    agency's list back from the browser's memory."""
    link = invite(system, new_email(), agency.slug)
    context = clerk_context(browser, 1280)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        goto(page, origin(link) + "/console/bulletins/new", 200)
        page.get_by_role("button", name="Đăng xuất").click()
        page.wait_for_url(SIGN_IN_PAGE)
        page.go_back()
        page.wait_for_load_state("load")
        assert "/console/sign-in" in page.url, page.url
        expect(page.get_by_role("button", name="Đăng xuất")).to_have_count(0)
    finally:
        context.close()


def test_the_console_works_without_javascript(system: System, agency: Agency, browser: Any) -> None:
    """The script only enhances: with it off, a clerk still previews, publishes and, by
    reloading, sees the page online."""
    link = invite(system, new_email(), agency.slug)
    title = f"Thông báo không cần JavaScript {uuid.uuid4().hex[:6]}"
    context = browser.new_context(java_script_enabled=False, locale="vi-VN")
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        write_short(page, origin(link), title)
        page.get_by_role("button", name="Xem trước", exact=True).click()
        preview = page.frame_locator('iframe[title="Xem trước trên máy tính"]')
        expect(preview.locator("h1")).to_have_text(title)
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)

        def online() -> bool:
            page.reload()
            return "Đã đăng" in page.locator("#trang-thai").inner_text()

        eventually(online, "the status page saying Đã đăng after a reload", PUBLIC_SECONDS)
        public = page.get_by_role("link", name="Xem trang đã đăng")
        expect(public).to_be_visible()
        assert httpx.get(public.get_attribute("href"), timeout=10).status_code == 200
    finally:
        context.close()


def test_a_scheduled_bulletin_keeps_vietnam_time_from_a_browser_elsewhere(
    system: System, agency: Agency, browser: Any
) -> None:
    """A clerk travelling (browser in Paris) schedules for 08:00 tomorrow, Vietnam time: the
    console says 08:00 (the field is Vietnam time, not the browser's), the page is not public
    yet and the console links no public page."""
    link = invite(system, new_email(), agency.slug)
    base = origin(link)
    title = f"Thông báo hẹn giờ {uuid.uuid4().hex[:6]}"
    tomorrow = datetime.now(TZ).date() + timedelta(days=1)
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="vi-VN", timezone_id="Europe/Paris"
    )
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        write_short(page, base, title)
        page.get_by_label("Hẹn giờ").check()
        when = page.get_by_label("Thời điểm đăng (giờ Việt Nam)")
        when.fill(f"{tomorrow.isoformat()}T08:00:00")
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)
        expect(page.locator("#trang-thai")).to_have_text(
            f"Đã lên lịch đăng lúc 08:00 {tomorrow.strftime('%d/%m/%Y')}"
        )
        address = page.locator(".facts__url").inner_text().strip()
        assert httpx.get(address, timeout=10).status_code == 404  # embargoed
        expect(page.get_by_role("link", name="Xem trang đã đăng")).to_be_hidden()
    finally:
        context.close()


# What a word processor puts on the clipboard: paragraphs with their own fonts and colours.
WORD_HTML = (
    "<html><head><meta charset=utf-8><style>p.MsoNormal{color:red}</style></head><body>"
    "<!--StartFragment--><p class=MsoNormal style='margin:0'><b><span style='font-size:14pt'>"
    "Kế hoạch số 5</span></b></p><p class=MsoNormal>Theo đó, Kế hoạch đề ra 6 nhiệm vụ.</p>"
    "<p class=MsoNormal style='color:blue'>Nơi nhận: UBND tỉnh.</p><!--EndFragment-->"
    "</body></html>"
)
WORD_PLAIN = "Kế hoạch số 5\nTheo đó, Kế hoạch đề ra 6 nhiệm vụ.\nNơi nhận: UBND tỉnh."
WRITE_CLIPBOARD = """async ([html, plain]) => {
  await navigator.clipboard.write([new ClipboardItem({
    "text/html": new Blob([html], {type: "text/html"}),
    "text/plain": new Blob([plain], {type: "text/plain"}),
  })]);
}"""


def test_a_paste_from_a_word_processor_keeps_paragraphs_to_the_public_page(
    system: System, agency: Agency, browser: Any
) -> None:
    """Ctrl+V through the browser's real clipboard (not a made-up event), then published: the
    public page has the three paragraphs and none of the word processor's styling."""
    link = invite(system, new_email(), agency.slug)
    base = origin(link)
    title = f"Thông báo dán từ Word {uuid.uuid4().hex[:6]}"
    context = clerk_context(browser, 1280)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    watch = watch_context(context)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        goto(page, base + "/console/bulletins/new", 200)
        page.get_by_label("Tiêu đề").fill(title)
        body = page.get_by_role("textbox", name="Nội dung")
        body.focus()
        page.evaluate(WRITE_CLIPBOARD, [WORD_HTML, WORD_PLAIN])
        # Chromium sanitises HTML written to the clipboard by parsing it in this page, under
        # its CSP: the style refusals that reports are the test's writing, not the paste.
        page.evaluate("window.__cspViolations = []")
        watch.console.clear()
        page.keyboard.press("Control+V")
        expect(body).to_have_value(
            "Kế hoạch số 5\n\nTheo đó, Kế hoạch đề ra 6 nhiệm vụ.\n\nNơi nhận: UBND tỉnh."
        )
        page.get_by_role("button", name="Đăng bản tin", exact=True).click()
        page.wait_for_url(STATUS_PAGE)
        url = wait_online(page, "pasted", None)
        html = httpx.get(url, timeout=10).text
        article = html[html.index('<div class="article__body">') :].split("</div>", 1)[0]
        assert article.count("<p>") == 3, article
        assert "style" not in article and "Mso" not in article and "<b>" not in article
        assert_clean(watch, [page])
    finally:
        context.close()


def test_signing_in_returns_to_the_page_asked_for_and_nowhere_else(
    system: System, agency: Agency, browser: Any
) -> None:
    """A bookmarked editor leads through sign-in back to the editor; a link whose `next`
    names another site leads to the list, not there."""
    email = new_email()
    link = invite(system, email, agency.slug)
    base = origin(link) + "/console"
    context = clerk_context(browser, 1280)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        context.clear_cookies()

        def sign_in() -> None:
            page.get_by_label("Thư điện tử").fill(email)
            page.get_by_label("Mật khẩu", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Đăng nhập").click()

        goto(page, base + "/bulletins/new", 200)
        page.wait_for_url(SIGN_IN_PAGE)
        sign_in()
        page.wait_for_url(base + "/bulletins/new")
        expect(page.get_by_label("Tiêu đề")).to_be_visible()

        context.clear_cookies()
        goto(page, base + "/sign-in?next=https://ke-gian.example/console/", 200)
        sign_in()
        page.wait_for_url(base + "/bulletins")
    finally:
        context.close()


def shift_tab_to(page: Any, target: Any) -> None:
    """Press Shift+Tab until `target` has the focus (bounded)."""
    for _ in range(TAB_LIMIT):
        page.keyboard.press("Shift+Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{TAB_LIMIT} Shift+Tabs never reached {target}")


def test_markdown_with_the_toolbar_by_keyboard_to_the_public_page(
    system: System, agency: Agency, browser: Any
) -> None:
    """Markdown chosen with the arrow keys, a heading and bold set with the toolbar's
    buttons from the keyboard (the selection in the text kept meanwhile), published: the
    public page has the heading and the bold words."""
    link = invite(system, new_email(), agency.slug)
    title = f"Thông báo Markdown {uuid.uuid4().hex[:6]}"
    context = clerk_context(browser, 1280)
    try:
        page = context.new_page()
        accept_invite(page, link, agency)
        goto(page, origin(link) + "/console/bulletins/new", 200)
        tab_to(page, page.get_by_label("Tiêu đề"))
        page.keyboard.type(title)
        tab_to(page, page.get_by_role("radio", name="Văn bản thường"))
        page.keyboard.press("ArrowDown")
        expect(page.get_by_role("radio", name="Markdown")).to_be_checked()
        toolbar = page.get_by_role("group", name="Định dạng Markdown")
        expect(toolbar).to_be_visible()

        body = page.get_by_role("textbox", name="Nội dung")
        tab_to(page, body)
        page.keyboard.type("Kế hoạch năm học mới")
        page.keyboard.press("Shift+Home")
        shift_tab_to(page, toolbar.get_by_role("button", name="Đề mục"))
        page.keyboard.press("Enter")
        expect(body).to_be_focused()
        page.keyboard.press("End")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")
        page.keyboard.type("Nhiệm vụ trọng tâm")
        for _ in range(len("trọng tâm")):
            page.keyboard.press("Shift+ArrowLeft")
        shift_tab_to(page, toolbar.get_by_role("button", name="Đậm"))
        page.keyboard.press("Enter")
        expect(body).to_have_value("## Kế hoạch năm học mới\n\nNhiệm vụ **trọng tâm**")

        tab_to(page, page.get_by_role("button", name="Đăng bản tin", exact=True))
        page.keyboard.press("Enter")
        page.wait_for_url(STATUS_PAGE)
        url = wait_online(page, "markdown", None)
        html = httpx.get(url, timeout=10).text
        article = html[html.index('<div class="article__body">') :].split("</div>", 1)[0]
        assert "Kế hoạch năm học mới</h2>" in article, article
        assert "<strong>trọng tâm</strong>" in article, article
    finally:
        context.close()
