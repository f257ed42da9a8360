"""Corrections, withdrawals and embargoes, end to end through the running system."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import feedparser
import httpx

from shared.testing import System, eventually

WAIT = 30.0


def absent(system: System, path: str, guid: str) -> bool:
    return entry(system, path, guid) is None


def not_linked(system: System, page: str, link: str) -> bool:
    return link not in httpx.get(system.gateway_url + page).text


def entry(system: System, path: str, guid: str) -> Any:
    """The feed entry with this guid, or None (also while the feed does not exist yet)."""
    response = httpx.get(system.gateway_url + path)
    if response.status_code == 404:
        return None
    parsed = feedparser.parse(response.content)
    assert parsed.bozo == 0
    return next((e for e in parsed.entries if e.id == guid), None)


def new_agency(system: System) -> tuple[str, str]:
    slug = f"co-quan-{uuid.uuid4().hex[:6]}"
    return slug, system.create_agency("Sở Văn hóa", slug)


def test_a_correction_updates_page_feeds_and_indexes_under_the_same_guid(system: System) -> None:
    slug, key = new_agency(system)
    with system.api(key) as api:
        first = api.post("/v1/bulletins", json={"title": "Lễ hội mùa xuân", "body": "Ngày 1/3.",
                                                "category": "Văn hóa"}).json()  # fmt: skip
        v1 = system.wait_published(api, first["id"])
        atom = f"/feeds/agency/{slug}.atom"
        before = eventually(lambda: entry(system, atom, v1["guid"]), "revision 1 in the feed")
        time.sleep(1.1)  # feed dates have whole seconds: let the correction's be later
        answer = api.put(f"/v1/bulletins/{first['id']}", json={
            "title": "Lễ hội mùa xuân (dời ngày)", "body": "Dời sang ngày 8/3.",
            "category": "Du lịch"})  # fmt: skip
        assert answer.status_code == 202 and answer.json()["revision"] == 2
        assert answer.json()["url"] == first["url"]  # the URL never changes
        eventually(lambda: api.get(f"/v1/bulletins/{first['id']}").json()["rendered_revision"] == 2,
                   "revision 2 rendered")  # fmt: skip
        # The same content again makes no revision 3.
        same = api.put(f"/v1/bulletins/{first['id']}", json={
            "title": "Lễ hội mùa xuân (dời ngày)", "body": "Dời sang ngày 8/3.",
            "category": "Du lịch"})  # fmt: skip
        assert same.json()["revision"] == 2

    page = httpx.get(first["url"]).text
    assert "Dời sang ngày 8/3." in page and "Ngày 1/3." not in page
    after = eventually(
        lambda: (e := entry(system, atom, v1["guid"])) and e.title.endswith("(dời ngày)") and e,
        "the corrected entry in the feed",
    )
    assert after.id == before.id and after.published == before.published
    assert after.updated_parsed > before.updated_parsed
    # It moved from the old category's listings to the new one's.
    eventually(lambda: entry(system, "/feeds/category/du-lich.atom", v1["guid"]), "new category")
    eventually(lambda: entry(system, "/feeds/category/van-hoa.atom", v1["guid"]) is None,
               "gone from the old category")  # fmt: skip
    eventually(lambda: "(dời ngày)" in httpx.get(f"{system.gateway_url}/{slug}/").text,
               "the agency page to follow")  # fmt: skip


def test_a_withdrawal_answers_410_and_leaves_every_listing(system: System) -> None:
    slug, key = new_agency(system)
    with system.api(key) as api:
        bulletin = api.post("/v1/bulletins", json={"title": "Thông báo sai", "body": "Nhầm.",
                                                   "category": "Đính chính"}).json()  # fmt: skip
        document = system.wait_published(api, bulletin["id"])
        feeds = ["/feeds/all.rss", f"/feeds/agency/{slug}.rss", "/feeds/category/dinh-chinh.rss"]
        for path in feeds:
            eventually(partial(entry, system, path, document["guid"]), f"listed in {path}")
        gone = api.delete(f"/v1/bulletins/{bulletin['id']}")
        assert gone.status_code == 202 and gone.json()["status"] == "withdrawn"
        eventually(lambda: httpx.get(bulletin["url"]).status_code == 410, "410 Gone")
        again = api.delete(f"/v1/bulletins/{bulletin['id']}")
        assert again.json()["revision"] == gone.json()["revision"]  # idempotent
        refused = api.put(f"/v1/bulletins/{bulletin['id']}", json={"title": "x", "body": "y"})
        assert refused.status_code == 409
    notice = httpx.get(bulletin["url"])
    assert "gỡ bỏ" in notice.text and notice.headers["content-type"].startswith("text/html")
    for path in feeds:
        eventually(partial(absent, system, path, document["guid"]), f"gone from {path}")
    link = bulletin["url"].removeprefix(system.gateway_url)
    for page in ("/", f"/{slug}/"):
        eventually(partial(not_linked, system, page, link), f"gone from {page}")


def test_an_embargoed_bulletin_is_invisible_until_its_time(system: System) -> None:
    slug, key = new_agency(system)
    release = datetime.now(UTC) + timedelta(seconds=4)
    with system.api(key) as api:
        answer = api.post("/v1/bulletins", json={
            "title": "Kết quả thi", "body": "Công bố lúc 8 giờ.",
            "published_at": release.isoformat()})  # fmt: skip
        assert answer.json()["status"] == "scheduled"
        bulletin = answer.json()
        guid = api.get(f"/v1/bulletins/{bulletin['id']}").json()["guid"]
        while datetime.now(UTC) < release - timedelta(seconds=1):
            assert httpx.get(bulletin["url"]).status_code == 404
            assert entry(system, f"/feeds/agency/{slug}.rss", guid) is None
            assert "Kết quả thi" not in httpx.get(f"{system.gateway_url}/{slug}/").text
            time.sleep(0.2)
        document = system.wait_published(api, bulletin["id"], timeout=WAIT)
    lateness = datetime.fromisoformat(document["rendered_at"]) - release
    assert timedelta(0) <= lateness  # never early
    assert httpx.get(bulletin["url"]).status_code == 200
    eventually(lambda: entry(system, f"/feeds/agency/{slug}.rss", guid), "in the feed at its time")


def test_scheduled_bulletins_can_be_changed_and_withdrawn(system: System) -> None:
    _slug, key = new_agency(system)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with system.api(key) as api:
        first = api.post("/v1/bulletins", json={"title": "Lịch họp", "body": "A",
                                                "published_at": later}).json()  # fmt: skip
        moved = api.put(
            f"/v1/bulletins/{first['id']}",
            json={"title": "Lịch họp (sửa)", "body": "B", "published_at": later},
        )
        assert (moved.json()["status"], moved.json()["revision"]) == ("scheduled", 2)
        # Without published_at a correction keeps the date it had; a past one releases it.
        kept = api.put(f"/v1/bulletins/{first['id']}", json={"title": "Lịch họp", "body": "C"})
        assert kept.json()["status"] == "scheduled"
        now = api.put(
            f"/v1/bulletins/{first['id']}",
            json={
                "title": "Lịch họp (ngay)",
                "body": "C",
                "published_at": datetime.now(UTC).isoformat(),
            },
        )
        assert now.json()["status"] == "queued"
        published = system.wait_published(api, first["id"])
        assert published["title"] == "Lịch họp (ngay)"
        # Once public, it cannot be hidden again by moving its date into the future.
        refused = api.put(
            f"/v1/bulletins/{first['id']}",
            json={"title": "Lịch họp", "body": "D", "published_at": later},
        )
        assert refused.status_code == 422

        second = api.post("/v1/bulletins", json={"title": "Hủy", "body": "E",
                                                 "published_at": later}).json()  # fmt: skip
        withdrawn = api.delete(f"/v1/bulletins/{second['id']}").json()
        assert withdrawn["status"] == "withdrawn"
        status = api.get(f"/v1/bulletins/{second['id']}").json()
    assert status["status"] == "withdrawn"
    # It was never public: no page, and no tombstone to reveal it existed.
    assert httpx.get(second["url"]).status_code == 404
