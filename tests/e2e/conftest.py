"""A real browser (Debian's chromium driven by Playwright) for the end-to-end tests, and a
watch on what a page must never do under the site's CSP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox as root; no GPU on this machine; no background calls to Google's hosts, which
# the closed network refuses by the dozen.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Installed before any page script: every CSP violation the document reports (blocked inline
# script or handler, style, a Trusted Types sink, a refused load) is kept in the page.
CSP_RECORDER = """
(() => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    window.__cspViolations.push({
      directive: event.violatedDirective,
      blocked: event.blockedURI,
      sample: event.sample,
      source: event.sourceFile,
      line: event.lineNumber,
    });
  });
})();
"""
# Console lines Chromium writes for a CSP or Trusted Types refusal.
_CSP_CONSOLE = ("Content Security Policy", "Content-Security-Policy", "Trusted Type")


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is
# open, which would break any later test that starts its own loop.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watch:
    """What the pages of one browser context did that they must not: dialogs (alert, confirm,
    prompt: some injected script ran), CSP violations (seen by the page's own event and in the
    console) and uncaught script errors."""

    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def violations(self, page: Any) -> list[Any]:
        """This page's recorded CSP violation events, then every CSP console line so far."""
        events: list[Any] = page.evaluate("window.__cspViolations || []")
        return [*events, *self.console]

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message} on {dialog.page.url}")
        dialog.dismiss()

    def _on_console(self, message: Any) -> None:
        if any(marker in message.text for marker in _CSP_CONSOLE):
            self.console.append(f"{message.type}: {message.text}")


def watch_context(context: Any) -> Watch:
    """Record, for every page and frame of ``context``, what ``Watch`` describes."""
    watch = Watch()
    context.add_init_script(CSP_RECORDER)
    context.on("dialog", watch._on_dialog)
    context.on("console", watch._on_console)
    context.on("weberror", lambda error: watch.errors.append(str(error.error)))
    return watch
