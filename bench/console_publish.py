"""Scenario 9: the web console's "Đăng bản tin", pressed → the clerk sees it online.

    python -m bench console-publish                  # through the harness (table, markdown)
    python -m bench.console_publish [--publishes 30]

One real system (`bantin up`). A clerk is invited with the CLI, sets a password and signs in,
as in a browser but over HTTP (httpx, cookies and CSRF tokens as the pages give them). Then,
one after another, the seed sample (its title numbered, so no two are the same text) is
published through the editor form. From the moment the form is sent, three things are polled
every 10 ms until each holds: the console's status (`status.json` says online, what the
clerk's page shows), the public page (200 from the gateway), and the agency's Atom feed
listing the page. A benchmark: it reports, never fails on a number.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.core import Options, Result
from bench.latency import percentile
from bench.system import running_system
from services.cli.client import load_bulletin
from shared.testing import System

NAME = "9 console publish"
SEED = Path(__file__).resolve().parents[1] / "examples" / "000_4fbfac1c975a2018.txt"
AGENCY = "bac-kan"  # the demo agency `bantin up` creates
PASSWORD = "mật khẩu đủ dài"
POLL = 0.01
TIMEOUT = 30.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


@dataclass
class Figures:
    status: list[float] = field(default_factory=list)  # console says online
    page: list[float] = field(default_factory=list)  # public page answers 200
    feed: list[float] = field(default_factory=list)  # the agency's Atom feed lists it


def _field(pattern: re.Pattern[str], html: str) -> str:
    found = pattern.search(html)
    if found is None:
        raise RuntimeError(f"no {pattern.pattern!r} in the page")
    return found[1]


def sign_in(system: System, client: httpx.Client) -> None:
    invited = system.cli("user", "invite", "bench@bac-kan.example", "--agency", AGENCY)
    link = invited.stdout.strip().splitlines()[-1]
    form = client.get(link)
    done = client.post(link, data={"csrf_token": _field(_CSRF, form.text), "password": PASSWORD,
                                   "password_again": PASSWORD})  # fmt: skip
    if done.status_code != 303:
        raise RuntimeError(f"setting the password answered {done.status_code}")


def publish_once(system: System, client: httpx.Client, number: int, figures: Figures) -> None:
    sample = load_bulletin(SEED, system.settings().tz)
    form = client.get("/console/bulletins/new")
    data = {
        "csrf_token": _field(_CSRF, form.text),
        "idempotency_key": _field(_KEY, form.text),
        "title": f"{sample['title']} ({number})",
        "summary": sample.get("summary") or "",
        "body": sample["body"],
        "body_format": "text",
        "author": sample.get("author") or "",
        "category": sample.get("category") or "",
        "when": "now",
        "publish_at": "",
        "action": "publish",
    }
    started = time.perf_counter()
    sent = client.post("/console/bulletins/new", files={k: (None, v) for k, v in data.items()})
    if sent.status_code != 303:
        raise RuntimeError(f"publish answered {sent.status_code}: {sent.text[:300]}")
    status_url = sent.headers["location"] + "/status.json"
    url = feed_url = ""
    seen: dict[str, float] = {}
    with httpx.Client(timeout=5) as public:
        while len(seen) < 3 and time.perf_counter() - started < TIMEOUT:
            now = time.perf_counter() - started
            if "status" not in seen:
                state = client.get(status_url).json()
                url = state["url"]
                if state["online"]:
                    seen["status"] = now
            if "page" not in seen and url and public.get(url).status_code == 200:
                seen["page"] = now
            if "feed" not in seen and url:
                feed_url = feed_url or f"{system.gateway_url}/feeds/agency/{AGENCY}.atom"
                if url in public.get(feed_url).text:
                    seen["feed"] = now
            time.sleep(POLL)
    for name, values in (("status", figures.status), ("page", figures.page),
                         ("feed", figures.feed)):  # fmt: skip
        if name in seen:
            values.append(seen[name] * 1000)


def measure(options: Options, publishes: int) -> Figures:
    figures = Figures()
    with running_system(options, "console-publish") as system:
        base = system.ingest_url
        with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as client:
            sign_in(system, client)
            for number in range(1, publishes + 1):
                publish_once(system, client, number, figures)
    return figures


def run(options: Options) -> list[Result]:
    publishes = 10 if options.quick else (options.size or 30)
    figures = measure(options, publishes)
    results = []
    for label, values in (
        ("console shows Đã đăng", figures.status),
        ("public page online", figures.page),
        ("in the agency's Atom feed", figures.feed),
    ):
        if not values:
            results.append(Result(NAME, label, "never seen"))
            continue
        note = f"{len(values)} of {publishes} publishes, one at a time; max {max(values):.0f} ms"
        print(f"{label}: p50 {percentile(values, 0.5):.0f} ms, p95 "
              f"{percentile(values, 0.95):.0f} ms, {note}")  # fmt: skip
        results += [
            Result(NAME, f"{label}: p50", percentile(values, 0.5), "ms"),
            Result(NAME, f"{label}: p95", percentile(values, 0.95), "ms", note=note),
        ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishes", type=int, default=30)
    args = parser.parse_args()
    run(Options(size=args.publishes))


if __name__ == "__main__":
    main()
