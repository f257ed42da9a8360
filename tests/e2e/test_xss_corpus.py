"""The XSS corpus through the running system, read back in Chromium: nothing executes.

Every payload of data/xss_payloads.txt is submitted through the real ingest API (the batch
endpoint) three times, as the body in ``html``, ``markdown`` and ``text`` format, each time with
the same payload in every text field (title, summary, author, category), under an agency whose
name is itself a payload. Real workers render them; the text-format bulletins of every other
payload are then withdrawn, so their URLs show the 410 notice (title and agency name again).

Each resulting page, and every listing page they link (home, agency, each category), is loaded
in one browser context with:

- a dialog listener (alert, confirm, prompt: some injected script ran), and alert, confirm and
  prompt wrapped to set ``window.__xss`` as well, which must stay undefined (nor may DOM
  clobbering define it);
- the CSP violation recorder (event and console): a sanitiser hole shows up here even when the
  CSP blocks it;
- every element focused and sent the events inline handlers listen to (mouse, pointer, focus,
  load, error, toggle, animation...), and a real mouse moved over the body's elements;
- a look at the DOM: no handler or style attribute, no script but the site's own, no
  javascript:/data:/vbscript: URL, no frame, object, form, base or meta refresh; and each text
  field shown as the very text that was sent.

Requests to anything but the system itself are aborted (an image's onerror then fires, which
is the point). A failure names the payload, the format and the page.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.security_headers import SITE_CSP
from shared.testing import System, start_system, stop_system
from tests.e2e.conftest import _CSP_CONSOLE, CHROMIUM, CSP_RECORDER, LAUNCH_ARGS

pytestmark = pytest.mark.e2e

PAYLOADS_FILE = Path(__file__).resolve().parent / "data" / "xss_payloads.txt"
HOSTILE_AGENCY = "Sở <img src=x onerror=alert(1)>\"'</title><script>alert(1)</script>"
BATCH = 100  # the batch endpoint's limit
TEXT_GROUP = 10  # text bodies are escaped line by line: ten payloads share one page
PUBLISH_TIMEOUT = 150.0  # seconds for every bulletin to be rendered (bounds the wait loops)
PAGE_TIMEOUT_MS = 20_000
# Real mouse moves: on every MOUSE_EVERY-th article page, over its first MAX_MOUSE_POINTS
# body elements. Synthetic events reach every element of every page; these add trusted ones.
MOUSE_EVERY = 5
MAX_MOUSE_POINTS = 8
TABS = 3  # pages loaded side by side
# The system runs on 127.0.0.1; every other host fails to resolve at once, so an image from
# elsewhere errors immediately (its onerror, were there one, would fire) and nothing waits on
# the closed network. Unlike request interception, this keeps the browser's cache.
BROWSER_ARGS = [*LAUNCH_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]

# Before any page script: alert, confirm and prompt also leave a mark in the page (the dialog
# listener sees them too; the mark survives a dialog that is dismissed unseen).
ALERT_MARKER = """
(() => {
  for (const name of ["alert", "confirm", "prompt", "print"]) {
    const original = window[name];
    window[name] = function (...args) {
      window.__xss = name;
      try { window.top.__xss = name; } catch (error) { /* a cross-origin frame */ }
      return original.apply(this, args);
    };
  }
})();
"""

# Runs in the page after load: pokes every element the way a reader (or a bot) would, then
# reports what the DOM holds that the sanitiser should have removed, and where to move the
# mouse. Returns {findings: [...], points: [[x, y], ...]}.
POKE_AND_INSPECT = """
async ([texts, maxPoints]) => {
  const mouse = ["mouseover", "mouseenter", "mousemove", "mousedown", "dblclick"];
  const pointer = ["pointerover", "pointerenter"];
  const focus = ["focus", "focusin", "blur"];
  const other = ["load", "error", "toggle", "animationstart", "transitionend", "input",
                 "keydown", "copy", "begin"];
  const events = [
    ...mouse.map((type) => () => new MouseEvent(type, {bubbles: true})),
    ...pointer.map((type) => () => new PointerEvent(type, {bubbles: true})),
    ...focus.map((type) => () => new FocusEvent(type, {bubbles: true})),
    ...other.map((type) => () => new Event(type, {bubbles: true})),
  ];
  const all = [...document.querySelectorAll("*")];
  // Real focus where an element can take it (asking every element costs a layout each);
  // the synthetic focus events below reach every element anyway.
  const focusable = "a[href], area[href], button, input, select, textarea, iframe, summary, " +
    "[tabindex], [contenteditable], [autofocus]";
  for (const element of document.querySelectorAll(focusable)) {
    element.focus({preventScroll: true});
  }
  for (const element of all) {
    for (const make of events) element.dispatchEvent(make());
  }
  for (const type of ["load", "pageshow", "hashchange", "resize", "scroll", "message"]) {
    window.dispatchEvent(new Event(type));
  }
  // Let handlers queued by the events above run before anyone looks.
  await new Promise((done) => setTimeout(done, 0));

  const findings = [];
  const urlAttributes = new Set(["href", "src", "action", "formaction", "xlink:href", "poster",
    "data", "srcset", "background", "dynsrc", "lowsrc", "ping", "codebase", "cite", "to",
    "values", "from", "by"]);
  for (const element of all) {
    for (const attribute of element.attributes) {
      const name = attribute.name.toLowerCase();
      if (name.startsWith("on")) findings.push(`handler ${name}= on <${element.localName}>`);
      // site.js sizes the article text through the CSSOM (--text-scale), which CSP allows.
      const ours = element.id === "noi-dung-bai" && attribute.value.startsWith("--text-scale");
      if (name === "style" && !ours) findings.push(`style= on <${element.localName}>`);
      if (name === "srcdoc") findings.push(`srcdoc= on <${element.localName}>`);
      if (urlAttributes.has(name)) {
        const value = [...attribute.value].filter((c) => c > " ").join("").toLowerCase();
        for (const scheme of ["javascript:", "data:", "vbscript:"]) {
          if (value.startsWith(scheme)) {
            findings.push(`${scheme} in ${name}= on <${element.localName}>`);
          }
        }
      }
    }
  }
  for (const script of document.querySelectorAll("script")) {
    const ours = script.type === "application/ld+json"
      || (script.getAttribute("src") || "").startsWith("/static/site.js?v=");
    if (!ours) findings.push("script: " + script.outerHTML.slice(0, 100));
  }
  const forbidden = "iframe, frame, frameset, object, embed, applet, portal, base, form, " +
    "input, textarea, select, main style, main link, main meta, meta[http-equiv], svg, math, " +
    "template, noscript, video, audio, source, marquee, dialog, details, isindex, " +
    "main button:not(.toolbar__button), [id=__xss], [name=__xss]";
  for (const element of document.querySelectorAll(forbidden)) {
    findings.push("element: " + element.outerHTML.slice(0, 100));
  }
  for (const [selector, expected] of Object.entries(texts)) {
    const shown = document.querySelector(selector)?.textContent;
    if (shown !== expected) findings.push(`${selector} shows ${JSON.stringify(shown)}`);
  }
  if (typeof window.__xss !== "undefined") {
    const kind = Object.prototype.toString.call(window.__xss);
    findings.push(`window.__xss = ${kind} ${String(window.__xss)}`);
  }
  for (const v of window.__cspViolations) findings.push("CSP violation: " + JSON.stringify(v));
  const points = [];
  for (const element of document.querySelectorAll(".article__body *, h1, .item a, .gone *")) {
    const box = element.getBoundingClientRect();
    if (box.width > 0 && box.height > 0 && points.length < maxPoints) {
      points.push([box.x + box.width / 2, box.y + Math.min(box.height / 2, 10)]);
    }
  }
  const links = [...document.querySelectorAll(".crumbs a")].map((link) => link.href);
  return {findings, points, links};
}
"""

# Where each field shows on a page; each must read back as exactly the text sent.
ARTICLE_FIELDS = {
    "title": "h1",
    "summary": ".lead",
    "author": ".byline__name",
    "agency": ".article__facts > div:nth-of-type(1) dd",
    "category": ".article__facts > div:nth-of-type(2) dd",
}
WITHDRAWN_FIELDS = {"title": ".gone__headline", "agency": ".crumbs li:nth-of-type(2) a"}

# What a hole in the sanitiser would leave in a page, and what the checks must say about it.
CONTROL_PAGE = "xss-control.html"
CONTROL_HTML = b"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>c</title>
</head><body><img src="/nowhere.png" onerror="window.__xss = 1; alert(1)" alt="">
<p style="color: red">x</p><a href="javascript:alert(1)">j</a><script>alert(1)</script>
<a id="__xss">clobbered</a></body></html>"""
CONTROL_FINDINGS = [
    "handler onerror=",
    "style= on <p>",
    "javascript: in href=",
    "script: <script>",
    'element: <a id="__xss">',
    "window.__xss = [object HTMLAnchorElement]",  # DOM clobbering
    "CSP violation",
    "CSP console",
]


def load_payloads() -> list[str]:
    # Split on "\n" only: str.splitlines would also split at U+2028 inside a payload.
    text = PAYLOADS_FILE.read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("# ")]


@dataclass
class Submission:
    """One bulletin of the corpus: which payloads it carries, and where it ended up."""

    label: str  # names the payload(s) and format in a failure
    item: dict[str, Any]
    bulletin_id: int = 0
    url: str = ""

    def fields(self) -> dict[str, str]:
        """What each text field must show: the text sent, as the ingest cleans it."""
        item = self.item
        shown = {name: item[name].strip() for name in ("title", "summary", "author", "category")}
        return shown | {"agency": HOSTILE_AGENCY}


@dataclass
class Job:
    """A page to load and what it must answer and show."""

    label: str
    url: str
    status: int = 200
    texts: dict[str, str] = field(default_factory=dict)  # CSS selector -> exact text
    mouse: bool = False  # also move the real mouse over the body (slower: a sample of pages)


def corpus_items(payloads: list[str]) -> list[Submission]:
    """Each payload as an html and as a markdown body, with every text field the payload too;
    and as text bodies, ten to a bulletin (one paragraph each), titled by the first."""
    fields = ("title", "summary", "author", "category")
    submissions = []
    for index, payload in enumerate(payloads):
        for body_format in ("html", "markdown"):
            item = dict.fromkeys(fields, payload) | {"body": payload, "body_format": body_format}
            submissions.append(Submission(f"#{index} {payload!r} ({body_format})", item))
    for start in range(0, len(payloads), TEXT_GROUP):
        group = payloads[start : start + TEXT_GROUP]
        body = {"body": "\n\n".join(group), "body_format": "text"}
        item = dict.fromkeys(fields, group[0]) | body
        label = f"#{start}..#{start + len(group) - 1} (text, titled {group[0]!r})"
        submissions.append(Submission(label, item))
    return submissions


def submit(client: httpx.Client, submissions: list[Submission]) -> list[str]:
    """Through the batch endpoint, 100 a call; the refusals (each leaves a payload untested)."""
    refused = []
    for start in range(0, len(submissions), BATCH):
        chunk = submissions[start : start + BATCH]
        items = [s.item | {"idempotency_key": f"xss-{start + i}"} for i, s in enumerate(chunk)]
        answer = client.post("/v1/bulletins:batch", json={"bulletins": items})
        assert answer.status_code == 200, answer.text
        for result in answer.json()["results"]:
            submission = chunk[result["index"]]
            if result["status"] == 202:
                submission.bulletin_id = result["bulletin"]["id"]
            else:
                refused.append(f"{submission.label}: {result['problem']}")
    return refused


def wait_until(
    client: httpx.Client, submissions: list[Submission], statuses: set[str]
) -> list[str]:
    """Poll until each bulletin's status is in ``statuses`` (or ``failed``: a finding)."""
    pending = list(submissions)
    problems = []
    deadline = time.monotonic() + PUBLISH_TIMEOUT
    while pending:
        still = []
        for submission in pending:
            document = client.get(f"/v1/bulletins/{submission.bulletin_id}").json()
            if document["status"] == "failed":
                problems.append(f"{submission.label}: render failed: {document['last_error']}")
            elif document["status"] in statuses:
                submission.url = document["url"]
            else:
                still.append(submission)
        pending = still
        assert time.monotonic() < deadline, f"{len(pending)} bulletins never became {statuses}"
        if pending:
            time.sleep(0.2)
    return problems


async def check(page: Any, job: Job, seen: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Load, poke and inspect one page: (what is wrong with it, the listing links it has)."""
    seen["console"].clear()
    seen["dialogs"].clear()
    problems = []
    response = await page.goto(job.url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
    if response is None or response.status != job.status:
        problems.append(f"answered {response and response.status}, expected {job.status}")
    elif response.headers.get("content-security-policy") != SITE_CSP:
        problems.append("no site CSP on the answer")
    points = MAX_MOUSE_POINTS if job.mouse else 0
    report = await page.evaluate(POKE_AND_INSPECT, [job.texts, points])
    for x, y in report["points"]:
        await page.mouse.move(x, y)  # real (trusted) hover events, on a sample of the pages
    if report["points"]:
        marker = await page.evaluate("typeof window.__xss === 'undefined' ? null : __xss")
        if marker is not None:
            problems.append(f"window.__xss = {marker} after hovering")
    problems += report["findings"]
    problems += [f"CSP console: {line}" for line in seen["console"]]
    problems += [f"dialog: {d}" for d in seen["dialogs"]]
    return problems, report["links"]


async def browse(jobs: list[Job]) -> tuple[list[str], set[str]]:
    """Every job in one browser context, TABS pages at a time: (findings, listing links)."""
    from playwright.async_api import async_playwright

    findings: list[str] = []
    links: set[str] = set()
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def tab(context: Any) -> None:
        page = await context.new_page()
        seen: dict[str, list[str]] = {"console": [], "dialogs": []}

        async def on_dialog(dialog: Any) -> None:
            seen["dialogs"].append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        def on_console(message: Any) -> None:
            if any(marker in message.text for marker in _CSP_CONSOLE):
                seen["console"].append(message.text)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        while not queue.empty():
            job = queue.get_nowait()
            problems, found = await check(page, job, seen)
            findings.extend(f"{job.label} at {job.url}: {problem}" for problem in problems)
            links.update(found)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        await context.add_init_script(CSP_RECORDER)
        await context.add_init_script(ALERT_MARKER)
        await asyncio.gather(*(tab(context) for _ in range(TABS)))
        await browser.close()
    return findings, links


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    pytest.importorskip("playwright.async_api")
    # Rate limits far above this test's burst of a few hundred bulletins.
    limits = {"BANTIN_RATE_LIMIT": "100000/second", "BANTIN_BATCH_RATE_LIMIT": "100000/second"}
    running = start_system(tmp_path_factory.mktemp("bantin-xss"), extra_env=limits)
    yield running
    stop_system(running)


# Hundreds of pages in Chromium: about 100 s alone, near 300 s on a busy 2-core machine.
@pytest.mark.timeout(600)
def test_no_payload_executes_in_any_field_or_format(system: System) -> None:
    payloads = load_payloads()
    assert len(payloads) >= 100
    submissions = corpus_items(payloads)
    key = system.create_agency(HOSTILE_AGENCY, slug="co-quan-xss")
    with system.api(key) as client:
        client.timeout = httpx.Timeout(60)
        refused = submit(client, submissions)
        assert refused == [], "\n".join(refused)  # a refused payload would go untested
        failures = wait_until(client, submissions, {"published"})
        live = [s for s in submissions if s.url]
        jobs = [Job(s.label, s.url, 200, {ARTICLE_FIELDS[k]: v for k, v in s.fields().items()},
                    mouse=number % MOUSE_EVERY == 0) for number, s in enumerate(live)]  # fmt: skip
        found, listings = asyncio.run(browse(jobs))
        failures += found

        # The text bulletins withdrawn: their URLs now show the 410 notice, titled by a payload.
        withdrawn = [s for s in live if s.item["body_format"] == "text"]
        for submission in withdrawn:
            assert client.delete(f"/v1/bulletins/{submission.bulletin_id}").status_code == 202
        failures += wait_until(client, withdrawn, {"withdrawn"})
    gone_deadline = time.monotonic() + PUBLISH_TIMEOUT
    while any(httpx.get(s.url).status_code != 410 for s in withdrawn):
        assert time.monotonic() < gone_deadline, "withdrawn pages still online"
        time.sleep(0.2)
    jobs = [Job(s.label, s.url, 410, {WITHDRAWN_FIELDS[k]: v for k, v in s.fields().items()
                                      if k in WITHDRAWN_FIELDS}) for s in withdrawn]  # fmt: skip
    # And every listing the pages linked: home, the agency, each category.
    jobs += [Job("listing", url) for url in sorted(listings)]
    # The control: a page as a sanitiser hole would leave one, written straight into the site.
    (system.settings().resolved_site_dir / CONTROL_PAGE).write_bytes(CONTROL_HTML)
    jobs.append(Job("control", f"{system.gateway_url}/{CONTROL_PAGE}"))
    found, _ = asyncio.run(browse(jobs))
    control = [finding for finding in found if finding.startswith("control at ")]
    failures += [finding for finding in found if finding not in control]
    for kind in CONTROL_FINDINGS:  # each hole planted there was seen
        assert any(kind in finding for finding in control), (kind, control)

    pages = len(live) + len(jobs)
    print(f"\nXSS corpus: {len(payloads)} payloads in {len(submissions)} bulletins, "
          f"{pages} pages loaded, {len(failures)} findings")  # fmt: skip
    assert system.gateway_url + "/" in listings and len(listings) >= 3
    assert len(live) == len(submissions)
    assert failures == [], "\n".join(failures[:60])
