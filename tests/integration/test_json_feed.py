"""JSON Feed 1.1 through the running system: built, served, discovered, and withdrawn from."""

from __future__ import annotations

import json
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import lxml.html
from lxml import etree

from shared.testing import System, eventually

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "jsonfeed-1.1.schema.json").read_text()
)
VALIDATOR = jsonschema_rs.validator_for(SCHEMA, validate_formats=True)
JSON_FEED_TYPE = "application/feed+json; charset=utf-8"
ATOM = {"atom": "http://www.w3.org/2005/Atom"}


def json_feed(system: System, path: str) -> dict[str, Any] | None:
    """The JSON Feed at `path`, checked against the schema and its content type; None if absent."""
    response = httpx.get(system.gateway_url + path, timeout=5)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, path
    assert response.headers["content-type"] == JSON_FEED_TYPE, path
    document: dict[str, Any] = json.loads(response.content.decode("utf-8"))
    errors = [error.message for error in VALIDATOR.iter_errors(document)]
    assert errors == [], path
    return document


def ids_in(system: System, path: str) -> list[str]:
    feed = json_feed(system, path)
    return [] if feed is None else [item["id"] for item in feed["items"]]


def listed(system: System, path: str, guid: str, present: bool = True) -> bool:
    return (guid in ids_in(system, path)) is present


def atom_entries(system: System, path: str) -> list[tuple[str, str, str]]:
    """(id, published, updated) of each entry of the Atom feed at `path`, as written."""
    response = httpx.get(system.gateway_url + path, timeout=5)
    if response.status_code == 404:
        return []
    return [
        (
            entry.findtext("atom:id", namespaces=ATOM) or "",
            entry.findtext("atom:published", namespaces=ATOM) or "",
            entry.findtext("atom:updated", namespaces=ATOM) or "",
        )
        for entry in etree.fromstring(response.content).iterfind("atom:entry", ATOM)
    ]


def test_json_feeds_are_served_discovered_and_follow_withdrawals(system: System) -> None:
    slug = f"json-{uuid.uuid4().hex[:6]}"
    category = f"Chuyển đổi số {slug}"
    key = system.create_agency("Sở Thông tin và Truyền thông", slug)
    title = "Ủy ban nhân dân tỉnh Bắc Kạn: <script>alert(1)</script> & kế hoạch"
    with system.api(key) as api:
        answer = api.post("/v1/bulletins", json={
            "title": title, "summary": "Tóm tắt \"ngắn\" <b>gọn</b>.",
            "body": '<p onclick="x()">Nội dung <strong>chính</strong>.</p><script>x</script>',
            "body_format": "html", "category": category})  # fmt: skip
        assert answer.status_code == 202, answer.text
        document = system.wait_published(api, answer.json()["id"])
    guid, url = document["guid"], document["url"]
    page = lxml.html.fromstring(httpx.get(url).content)
    (category_page,) = page.xpath(
        '//dl[@class="article__facts"]//a/@href[contains(., "/chuyen-muc/")]'
    )
    agency_path = f"/feeds/agency/{slug}.json"
    category_path = f"/feeds/category/{category_page.split('/')[-2]}.json"

    # Discovery: the article page names a JSON Feed for each listing it is in, and shows it.
    advertised = page.xpath('//head/link[@rel="alternate"][@type="application/feed+json"]/@href')
    expected = [system.gateway_url + p for p in ("/feeds/all.json", agency_path, category_path)]
    assert advertised == expected
    visible = page.xpath("//footer//a[@type='application/feed+json']")
    assert [a.get("href") for a in visible] == expected
    # The badge shows the format; its whole name (a hidden prefix) says whose feed it is.
    assert {"".join(a.xpath("text()")).strip() for a in visible} == {"JSON Feed"}
    assert all(a.xpath("string()").strip().endswith("qua JSON Feed") for a in visible)

    # Each of the three JSON Feeds lists it, with the stored values; the agency's is only it.
    for path in ("/feeds/all.json", agency_path, category_path):
        eventually(partial(listed, system, path, guid), f"listed in {path}")
    feed = json_feed(system, agency_path)
    assert feed is not None
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == system.gateway_url + agency_path
    assert feed["home_page_url"] == f"{system.gateway_url}/{slug}/"
    (item,) = feed["items"]
    assert (item["id"], item["url"], item["title"]) == (guid, url, document["title"])
    assert item["summary"] == document["summary"]  # plain text, not HTML
    assert item["content_html"] == document["body_html"]  # the sanitised body
    assert "script" not in item["content_html"] and "onclick" not in item["content_html"]
    assert item["tags"] == [category] and item["language"] == "vi"
    # The same entry, ids and dates as the agency's Atom feed (built by the same job).
    atom_path = agency_path.removesuffix(".json") + ".atom"
    atom = eventually(lambda: atom_entries(system, atom_path), "the Atom feed")
    assert atom == [(item["id"], item["date_published"], item["date_modified"])]

    # Served like the other feeds: gzip, a per-encoding ETag, 304.
    packed = httpx.get(system.gateway_url + agency_path, headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-type"] == JSON_FEED_TYPE
    assert packed.headers["cache-control"] == "public, max-age=60"
    assert json.loads(packed.content) == feed  # httpx inflates it
    assert packed.headers["vary"].lower() == "accept-encoding"
    again = httpx.get(
        system.gateway_url + agency_path,
        headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]},
    )
    assert (again.status_code, again.content) == (304, b"")

    # Withdrawn: gone from every JSON Feed, as from RSS and Atom.
    with system.api(key) as api:
        assert api.delete(f"/v1/bulletins/{document['id']}").status_code == 202
    for path in ("/feeds/all.json", agency_path, category_path):
        eventually(partial(listed, system, path, guid, False), f"gone from {path}")
    eventually(lambda: atom_entries(system, atom_path) == [], "gone from the Atom feed")
    assert json_feed(system, agency_path) == {**feed, "items": []}
