"""Submit → render → feeds → gateway, through the real processes of `bantin up`."""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import httpx
import lxml.html
import pytest

from services.gateway.app import not_found_page
from shared.refresh import Job, Refresher
from shared.site import NOT_FOUND_PATH, Listing, ListingKind
from shared.storage import open_storage
from shared.testing import System
from tests.integration.conftest import PIPELINE_BACKENDS

# Every test here also runs with the site in an S3 bucket (a real moto server on loopback).
pytestmark = pytest.mark.parametrize("system", PIPELINE_BACKENDS, indirect=True)

# The real sample an agency published, shipped with the project (a user's clone has nothing else).
SEED = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"
SEED_TITLE = (
    "Ban hành Kế hoạch hành động thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 "
    "của Thủ tướng Chính phủ"
)


def seed_path() -> Path:
    assert SEED.exists(), f"seed sample not found at {SEED}"
    return SEED


def feed_links(page: lxml.html.HtmlElement) -> dict[str, list[str]]:
    links: dict[str, list[str]] = {"application/rss+xml": [], "application/atom+xml": []}
    for link in page.xpath('//head/link[@rel="alternate"]'):
        links.setdefault(link.get("type"), []).append(link.get("href"))
    return links


def wait_for_feed_entry(url: str, link: str, timeout: float = 15) -> tuple[Any, Any]:
    """The feed refreshes just after the page: poll until the entry shows up. A listing's
    first bulletin (a new category) makes its feed: until built, the feed is a 404."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, timeout=5)
        assert response.status_code in (200, 404), url
        if response.status_code == 200:
            parsed = feedparser.parse(response.content)
            entry = next((e for e in parsed.entries if e.get("link") == link), None)
            if entry is not None:
                return parsed, entry
        assert time.monotonic() < deadline, f"{link} never appeared in {url} ({response})"
        time.sleep(0.05)


def test_seed_sample_published_with_cli_appears_as_page_and_in_feeds(system: System) -> None:
    key = system.create_agency("UBND tỉnh Bắc Kạn", f"bac-kan-{uuid.uuid4().hex[:6]}")
    done = system.cli("publish", str(seed_path()), "--key", key, "--api", system.ingest_url)
    assert done.returncode == 0, done.stdout + done.stderr
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith(system.gateway_url + "/bac-kan-")
    assert "/ban-hanh-ke-hoach-hanh-dong-thuc-hien-quyet-dinh-so-628" in url

    response = httpx.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = lxml.html.fromstring(response.content)
    assert page.get("lang") == "vi"
    assert [h.text_content().strip() for h in page.xpath("//h1")] == [SEED_TITLE]
    text = page.text_content()
    assert "31/07/2020" in text
    assert "Ngày 30/7/2020, UBND tỉnh ban hành Kế hoạch hành động" in text
    assert "Theo đó, Kế hoạch đề ra 6 nhiệm vụ" in text
    assert "Hồng Nhung" in text
    assert "PublishingPortal" not in text
    buttons = [b.text_content().strip() for b in page.xpath("//button")]
    assert "Tăng cỡ chữ" in " ".join(buttons) and "Giảm cỡ chữ" in " ".join(buttons)

    with system.api(key) as api:
        bulletin_id = int(url.rsplit("-", 1)[1].removesuffix(".html"))
        status = api.get(f"/v1/bulletins/{bulletin_id}").json()
    assert status["status"] == "published" and status["url"] == url

    links = feed_links(page)
    assert len(links["application/rss+xml"]) >= 2 and len(links["application/atom+xml"]) >= 2
    published = datetime.fromisoformat(status["published_at"])
    # The sample is dated 2020: the site-wide and category feeds (shared with every other test
    # of this system) list only their newest items, so the agency's own feeds are where it
    # must be.
    agency_feeds = [link for link in links["application/rss+xml"] + links["application/atom+xml"]
                    if "/feeds/agency/" in link]  # fmt: skip
    assert len(agency_feeds) == 2
    for feed_url in agency_feeds:
        parsed, entry = wait_for_feed_entry(feed_url, url)
        assert parsed.bozo == 0, (feed_url, parsed.get("bozo_exception"))
        assert entry.id == status["guid"]
        assert entry.title == SEED_TITLE
        entry_time = datetime(*entry.published_parsed[:6]).replace(tzinfo=published.tzinfo)
        assert entry_time == published
        assert "Hồng Nhung" in (entry.get("author") or "")


def test_gateway_serves_feeds_with_types_and_revalidation(system: System) -> None:
    rss = httpx.get(system.gateway_url + "/feeds/all.rss")
    atom = httpx.get(system.gateway_url + "/feeds/all.atom")
    assert rss.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
    again = httpx.get(
        system.gateway_url + "/feeds/all.rss", headers={"If-None-Match": rss.headers["etag"]}
    )
    assert again.status_code in (200, 304)  # 200 only if a bulletin landed in between
    if again.status_code == 304:
        assert again.content == b""
    missing = httpx.get(system.gateway_url + "/khong-co-trang-nay/")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]


def test_the_site_is_where_the_settings_put_it(system: System) -> None:
    """Pages, feeds and static assets are in the bucket when BANTIN_STORAGE_URL names one,
    and then nothing is written to the site directory."""
    settings = system.settings()
    store = open_storage(settings)
    for relative in ("index.html", "feeds/all.rss", "static/site.css", NOT_FOUND_PATH):
        assert store.exists(relative), relative
    # The 404 page nginx serves by itself is the gateway's own.
    assert store.get(NOT_FOUND_PATH) == not_found_page()
    local = settings.resolved_site_dir
    if settings.storage_url:
        assert not local.exists() or not any(local.iterdir())
    else:
        assert (local / "index.html").is_file()


def _submit(api: httpx.Client, **fields: Any) -> httpx.Response:
    return api.post("/v1/bulletins", json={"title": "Thông báo", "body": "Nội dung.", **fields})


def test_idempotency_key_replays_and_conflicts(system: System) -> None:
    key = system.create_agency("Sở Y tế")
    with system.api(key) as api:
        headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
        first = api.post("/v1/bulletins", json={"title": "Lịch tiêm", "body": "A"}, headers=headers)
        replay = api.post(
            "/v1/bulletins", json={"body": "A", "title": "Lịch tiêm"}, headers=headers
        )
        conflict = api.post("/v1/bulletins", json={"title": "Khác", "body": "A"}, headers=headers)
        assert first.status_code == replay.status_code == 202
        same = ("id", "url", "status_url")
        assert [replay.json()[k] for k in same] == [first.json()[k] for k in same]
        assert replay.headers["idempotent-replayed"] == "true"
        assert conflict.status_code == 409
        assert conflict.headers["content-type"] == "application/problem+json"
        assert str(first.json()["id"]) in conflict.json()["detail"]
        system.wait_published(api, first.json()["id"])
        # A replay after publishing still creates nothing and reports the current status.
        late = api.post("/v1/bulletins", json={"title": "Lịch tiêm", "body": "A"}, headers=headers)
        assert late.json()["id"] == first.json()["id"] and late.json()["status"] == "published"


def test_every_error_is_a_precise_problem(system: System) -> None:
    key = system.create_agency("Sở Tư pháp")
    other_key = system.create_agency("Sở Tài chính")
    with system.api(key) as api, system.api(other_key) as other:
        cases = {
            401: httpx.post(system.ingest_url + "/v1/bulletins", json={"title": "a", "body": "b"}),
            400: api.post(
                "/v1/bulletins", content=b'{"title": ', headers={"content-type": "application/json"}
            ),
            422: api.post("/v1/bulletins", json={"title": "   ", "body_format": "docx"}),
            413: api.post("/v1/bulletins", json={"title": "a", "body": "x" * 1_100_000}),
        }
        bad_key = httpx.post(
            system.ingest_url + "/v1/bulletins",
            json={"title": "a", "body": "b"},
            headers={"Authorization": "Bearer bt_not-a-key"},
        )
        mine = _submit(api).json()["id"]
        cases[404] = other.get(f"/v1/bulletins/{mine}")
    for code, response in cases.items():
        assert response.status_code == code, (code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == code and problem["title"] and problem["detail"]
    assert bad_key.status_code == 401 and "not valid" in bad_key.json()["detail"]
    fields = {error["field"] for error in cases[422].json()["errors"]}
    assert fields == {"title", "body", "body_format"}


def test_hostile_and_unusual_input_is_cleaned_everywhere(system: System) -> None:
    key = system.create_agency("Sở Thông tin và Truyền thông")
    nfd_title = unicodedata.normalize("NFD", "Đảm bảo an toàn thông tin\x0b <script>x</script>")
    with system.api(key) as api:
        answer = api.post(
            "/v1/bulletins",
            json={
                "title": nfd_title,
                "body": '<p onclick="steal()">Chào <a href="javascript:alert(1)">bạn</a></p>'
                "<script>alert(1)</script><img src=/anh.png>\x01",
                "body_format": "html",
                "category": "Chuyển đổi số",
            },
        )
        assert answer.status_code == 202
        document = system.wait_published(api, answer.json()["id"])
    assert document["title"] == unicodedata.normalize(
        "NFC", "Đảm bảo an toàn thông tin <script>x</script>"
    )
    assert "/dam-bao-an-toan-thong-tin-script-x-script-" in document["url"]
    assert "script" not in document["body_html"] and "onclick" not in document["body_html"]
    assert f'src="{system.gateway_url}/anh.png"' in document["body_html"]

    page = httpx.get(document["url"]).text
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "alert(1)" not in page
    category_feed = f"{system.gateway_url}/feeds/category/chuyen-doi-so.atom"
    parsed, entry = wait_for_feed_entry(category_feed, document["url"])
    assert parsed.bozo == 0
    assert entry.title == document["title"]


def test_a_burst_for_one_agency_coalesces_feed_rebuilds(system: System) -> None:
    slug = f"burst-{uuid.uuid4().hex[:6]}"
    key = system.create_agency("Ban Quản lý dự án", slug)
    listing = Listing(ListingKind.AGENCY, slug)
    count = 40
    with system.api(key) as api, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _submit(api, title=f"Bản tin số {i}"), range(count)))
        ids = [a.json()["id"] for a in answers]
        for bulletin_id in ids:
            system.wait_published(api, bulletin_id)
    feed_url = f"{system.gateway_url}{listing.feed_path('rss')}"
    deadline = time.monotonic() + 20
    while len(feedparser.parse(httpx.get(feed_url).content).entries) < count:
        assert time.monotonic() < deadline, "the agency feed never caught up with the burst"
        time.sleep(0.1)
    refresher = Refresher(system.redis(), celery=None)  # type: ignore[arg-type]  # read-only use
    feed_builds = refresher.builds(Job.FEED, listing)
    page_builds = refresher.builds(Job.PAGE, listing)
    # Without coalescing every bulletin would rebuild the feed: `count` builds.
    assert 1 <= feed_builds < count, feed_builds
    assert 1 <= page_builds < count, page_builds
    agency_page = httpx.get(f"{system.gateway_url}/{slug}/").text
    listed = set(re.findall(r"Bản tin số (\d+)", agency_page))
    assert len(listed) == 30  # BANTIN_INDEX_ITEMS: the newest 30 of the 40
