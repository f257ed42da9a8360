"""/docs and /redoc render in a browser that can reach nothing but ingest: Swagger UI shows
the operations, ReDoc shows them too, and neither page asks for anything elsewhere or trips
its own CSP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shared.embedded_redis import free_port
from tests.e2e.conftest import watch_context

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module")
def ingest_url(tmp_path_factory: pytest.TempPathFactory, private_redis: str) -> Iterator[str]:
    """A real ingest server (uvicorn, as production runs it) on a real Redis."""
    data = tmp_path_factory.mktemp("docs-offline")
    port = free_port()
    env = {**os.environ, "BANTIN_DATA_DIR": str(data), "BANTIN_REDIS_URL": private_redis}
    argv = [sys.executable, "-m", "uvicorn", "--factory", "services.ingest.app:app_from_env",
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with (data / "ingest.log").open("wb") as log:
        server = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data / "ingest.log").read_text())
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture
def offline(browser: Any) -> Iterator[tuple[Any, list[str], Any]]:
    """A page whose every request off this machine is refused; the refused URLs; the watch."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch = watch_context(context)
    refused: list[str] = []

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    try:
        yield page, refused, watch
    finally:
        context.close()


def test_swagger_ui_renders_the_operations_offline(
    ingest_url: str, offline: tuple[Any, list[str], Any]
) -> None:
    page, refused, watch = offline
    page.goto(ingest_url + "/docs")
    submit = page.locator(".opblock-post .opblock-summary-path", has_text="/v1/bulletins").first
    submit.wait_for(state="visible", timeout=30_000)
    assert page.locator(".opblock-post .opblock-summary-method").first.inner_text() == "POST"
    assert page.get_by_text("Submit a bulletin for publishing").first.is_visible()
    submit.click()  # expanding it renders its parameters and responses from the document
    page.locator(".opblock.is-open .responses-table").first.wait_for(timeout=10_000)
    assert refused == []
    assert watch.violations(page) == [] and watch.errors == []


def test_redoc_renders_the_operations_offline(
    ingest_url: str, offline: tuple[Any, list[str], Any]
) -> None:
    page, refused, watch = offline
    page.goto(ingest_url + "/redoc")
    heading = page.get_by_role("heading", name="Submit a bulletin for publishing")
    heading.wait_for(state="visible", timeout=30_000)
    assert page.get_by_text("/v1/bulletins").count() >= 1  # the operation's endpoint box
    assert refused == []
    # ReDoc's "API docs by Redocly" footer links its logo from Redocly's CDN, with no option
    # to drop it: the docs CSP refuses it (offline it could not load anyway), and nothing else.
    others = [v for v in watch.violations(page) if REDOCLY_LOGO not in str(v)]
    assert others == [], watch.violations(page)
    assert watch.errors == []
