"""Sitemaps, robots.txt and the feed directory through the running system (`bantin up`).

Bulletins back-dated into different months land in their month's sitemap, which the index
lists; a withdrawal takes its URL out (and an emptied month out of the index); everything
is valid against the official XSDs (the news sitemap exists only with a URL to list) and
served with its own content type.
"""

from __future__ import annotations

import uuid
from functools import partial

import httpx
import lxml.html
from lxml import etree

from shared.testing import System, eventually
from tests.unit.render.test_sitemaps import NS, valid

XML_TYPE = "application/xml; charset=utf-8"


def get(system: System, path: str, **headers: str) -> httpx.Response:
    return httpx.get(system.gateway_url + path, headers=headers, timeout=5)


def locs(system: System, path: str, schema: str) -> list[str]:
    """The <loc>s of the sitemap (or index) at `path`, validated; [] when it is absent."""
    response = get(system, path)
    if response.status_code == 404:
        return []
    assert response.status_code == 200, path
    assert response.headers["content-type"] == XML_TYPE, path
    root = valid(schema, response.content)
    return [str(loc) for loc in root.xpath("//s:loc/text()", namespaces=NS)]


def lists(system: System, path: str, schema: str, wanted: list[str]) -> bool:
    return set(wanted) <= set(locs(system, path, schema))


def equals(system: System, path: str, wanted: list[str]) -> bool:
    return locs(system, path, "sitemap") == wanted


def test_sitemaps_follow_publishes_and_withdrawals(system: System) -> None:
    slug = f"sm-{uuid.uuid4().hex[:6]}"
    key = system.create_agency("Sở Tài nguyên và Môi trường", slug)
    # Months of their own (other tests publish today), one with two bulletins.
    dated = {
        "2011-02": ["2011-02-03T08:00:00Z", "2011-02-25T23:30:00Z"],
        "2011-04": ["2011-04-30T23:59:00Z"],
    }
    documents: dict[str, list[dict[str, str]]] = {}
    with system.api(key) as api:
        for month, times in dated.items():
            for i, when in enumerate(times):
                answer = api.post("/v1/bulletins", json={
                    "title": f"Thông báo {month} số {i} {slug}", "body": "Nội dung.",
                    "body_format": "text", "published_at": when})  # fmt: skip
                assert answer.status_code == 202, answer.text
                documents.setdefault(month, []).append(
                    system.wait_published(api, answer.json()["id"])
                )
        title = f'Ủy ban nhân dân tỉnh: <b>họp</b> & "bàn" {slug}'
        answer = api.post("/v1/bulletins", json={"title": title, "body": "Nội dung.",
                                                 "body_format": "text"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        fresh = system.wait_published(api, answer.json()["id"])

    base = system.gateway_url
    index = f"{base}/sitemap.xml"
    for month, docs in documents.items():
        month_url = f"{base}/sitemaps/{month}.xml"
        eventually(partial(lists, system, "/sitemap.xml", "siteindex", [month_url]),
                   f"{month} in {index}")  # fmt: skip
        wanted = [d["url"] for d in docs]
        eventually(partial(equals, system, f"/sitemaps/{month}.xml", wanted),
                   f"{month}'s sitemap lists {wanted}")  # fmt: skip

    # The news sitemap has the fresh one, with its title as written, and not the old ones.
    def news_titles() -> dict[str, str]:
        response = get(system, "/sitemaps/news.xml")
        if response.status_code != 200:
            return {}
        assert response.headers["content-type"] == XML_TYPE
        root = valid("news", response.content)
        return {
            url.findtext("s:loc", namespaces=NS): url.findtext("n:news/n:title", namespaces=NS)
            for url in root.iterfind("s:url", NS)
        }

    def with_fresh() -> dict[str, str] | None:
        titles = news_titles()
        return titles if fresh["url"] in titles else None

    news = eventually(with_fresh, "fresh in news")
    assert news[fresh["url"]] == fresh["title"] == title
    assert not {d["url"] for docs in documents.values() for d in docs} & set(news)
    # robots.txt names the news sitemap while there is one (with nothing in two days there is
    # none: an empty urlset is invalid against the XSD).
    news_line = f"Sitemap: {base}/sitemaps/news.xml"
    eventually(lambda: news_line in get(system, "/robots.txt").text.splitlines(),
               "robots.txt names the news sitemap")  # fmt: skip

    # The same bytes keep the same validator: a crawler's If-None-Match gets a 304.
    first = get(system, "/sitemaps/2011-02.xml")
    again = get(system, "/sitemaps/2011-02.xml", **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304

    # robots.txt, the OPML lists and /feeds/, each with its type.
    robots = get(system, "/robots.txt")
    assert robots.headers["content-type"] == "text/plain; charset=utf-8"
    assert f"Sitemap: {index}" in robots.text.splitlines()

    def opml_listing_the_agency() -> httpx.Response | None:
        r = get(system, "/feeds.opml")
        return r if r.status_code == 200 and f"/feeds/agency/{slug}.rss" in r.text else None

    opml = eventually(opml_listing_the_agency, "the agency in feeds.opml")
    assert opml.headers["content-type"] == "text/x-opml; charset=utf-8"
    outlines = etree.fromstring(opml.content).xpath(f'//outline[@htmlUrl="{base}/{slug}/"]')
    assert [o.get("xmlUrl") for o in outlines] == [f"{base}/feeds/agency/{slug}.rss"]
    atom = get(system, "/feeds/atom.opml")
    assert f"{base}/feeds/agency/{slug}.atom" in atom.text
    page = get(system, "/feeds/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    html = lxml.html.document_fromstring(page.content)
    assert html.get("lang") == "vi"
    assert f"{base}/feeds/agency/{slug}.json" in html.xpath("//main//a/@href")

    # Withdrawals: one of February's two leaves February's sitemap; April's only one takes
    # April out of the index, and its file away.
    gone, kept = documents["2011-02"]
    (april,) = documents["2011-04"]
    with system.api(key) as api:
        for document in (gone, april):
            assert api.delete(f"/v1/bulletins/{document['id']}").status_code == 202
    eventually(
        lambda: locs(system, "/sitemaps/2011-02.xml", "sitemap") == [kept["url"]],
        "the withdrawn URL out of February",
    )
    eventually(
        lambda: f"{base}/sitemaps/2011-04.xml" not in locs(system, "/sitemap.xml", "siteindex"),
        "April out of the index",
    )
    eventually(lambda: get(system, "/sitemaps/2011-04.xml").status_code == 404, "April gone")
    assert f"{base}/sitemaps/2011-02.xml" in locs(system, "/sitemap.xml", "siteindex")

    # `bantin rebuild` onto a site that lost them: the home page's rebuild brings back the
    # index, robots.txt and the feed lists, and the index the month sitemap.
    site = system.settings().resolved_site_dir
    for lost in ("sitemaps/2011-02.xml", "robots.txt", "feeds.opml"):
        (site / lost).unlink()
    done = system.cli("rebuild", "--no-progress")
    assert done.returncode == 0, done.stderr
    eventually(lambda: locs(system, "/sitemaps/2011-02.xml", "sitemap") == [kept["url"]],
               "February's sitemap rebuilt")  # fmt: skip
    eventually(lambda: get(system, "/robots.txt").status_code == 200, "robots.txt rebuilt")
    eventually(lambda: get(system, "/feeds.opml").status_code == 200, "feeds.opml rebuilt")
