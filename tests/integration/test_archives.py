"""RFC 5005 archived feeds through the running system (`bantin up`, real workers).

Bulletins back-dated over several months (three entries a part, so months split), with
corrections (one moving a bulletin to another month) and withdrawals (one emptying a month)
among them. Walking `prev-archive` from the current RSS and Atom feed of an agency and of
the whole site reaches every published bulletin exactly once and no withdrawn one; every
document is a valid, marked and consistently linked archive. `bantin rebuild` gives the same
bytes; a correction changes only the documents that show it; a lost file comes back.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from services.feed.feeds import FH_NS
from shared.site import ALL, Listing, ListingKind
from shared.testing import System, eventually, start_system, stop_system
from tests.conftest import fresh_postgresql
from tests.unit.test_hostile_text import read_feed

PER_PART = 3
ATOM = "http://www.w3.org/2005/Atom"
NS = {"atom": ATOM, "fh": FH_NS}
# Bound on the documents one walk may visit: the test publishes far fewer.
MAX_DOCUMENTS = 40
TYPES = {"rss": "application/rss+xml; charset=utf-8", "atom": "application/atom+xml; charset=utf-8"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archived(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """A system of its own: a small part size, a quick verification, and nothing else
    published into its months or its ALL listing."""
    env = {"BANTIN_ARCHIVE_ITEMS": str(PER_PART), "BANTIN_VERIFY_INTERVAL_SECONDS": "2"}
    if request.param == "sqlite":
        system = start_system(tmp_path_factory.mktemp("archives-sqlite"), extra_env=env)
        yield system
        stop_system(system)
        return
    with fresh_postgresql() as url:
        system = start_system(tmp_path_factory.mktemp("archives-pg"), url, extra_env=env)
        yield system
        stop_system(system)


class Unsettled(Exception):  # noqa: N818 - a state, not an error
    """The documents disagree with each other: builds (or the gateway's short revalidation
    window) have not caught up yet."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise Unsettled(message)


@dataclass(frozen=True)
class Document:
    url: str
    body: bytes
    links: dict[str, str]  # rel -> href (RFC 5005 and self)
    entries: dict[str, str]  # article URL -> title


def fetch(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


def parse(url: str, fmt: str) -> Document | None:
    """The feed or archive at `url`, validated; None while it is missing."""
    response = fetch(url)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, url
    assert response.headers["content-type"] == TYPES[fmt], url
    feed = read_feed(response.content)  # strict XML, and feedparser without complaint
    root = etree.fromstring(response.content)
    if fmt == "atom":
        links = {link.get("rel"): link.get("href") for link in root.iterfind("atom:link", NS)}
        # RFC 4287: the feed and each entry have an id, a title and an updated date, and
        # each entry an author.
        for path in ("atom:id", "atom:title", "atom:updated"):
            assert root.findtext(path, namespaces=NS), (url, path)
        for entry in root.iterfind("atom:entry", NS):
            for path in ("atom:id", "atom:title", "atom:updated", "atom:author/atom:name"):
                assert entry.findtext(path, namespaces=NS), (url, path)
    else:
        channel = root.find("channel")
        assert channel is not None
        links = {link.get("rel"): link.get("href") for link in channel.iterfind("atom:link", NS)}
        # RSS 2.0: title, link and description on the channel; each item a guid.
        for path in ("title", "link", "description"):
            assert channel.findtext(path), (url, path)
        for item in channel.iterfind("item"):
            assert item.findtext("guid"), url
    entries = {entry.link: entry.title for entry in feed.entries}
    assert len(entries) == len(feed.entries), f"an entry twice in {url}"
    return Document(url, response.content, links, entries)


def walk(system: System, listing: Listing, fmt: str) -> tuple[Document, list[Document]]:
    """The current feed and the archive documents reached from it by `prev-archive`, newest
    first, each checked: a marked archive, `current` and `self` right, and linked both ways
    with its neighbours (the `next-archive` of a document's older neighbour is it)."""
    base = system.gateway_url
    current = parse(base + listing.feed_path(fmt), fmt)
    require(current is not None, f"no feed {listing.feed_path(fmt)}")
    assert current is not None
    assert "current" not in current.links and "next-archive" not in current.links
    archives: list[Document] = []
    url, newer = current.links.get("prev-archive"), None
    while url is not None:
        assert len(archives) < MAX_DOCUMENTS, f"a loop of prev-archive links from {url}"
        document = parse(url, fmt)
        require(document is not None, f"prev-archive {url} is missing")
        assert document is not None
        root = etree.fromstring(document.body)
        marker = root.find(("" if fmt == "atom" else "channel/") + "fh:archive", NS)
        assert marker is not None, f"{url} has no fh:archive"
        assert document.links["self"] == url
        assert document.links["current"] == base + listing.feed_path(fmt)
        assert document.entries, f"{url} is an empty archive"
        expected_next, found_next = newer.url if newer else None, document.links.get("next-archive")
        require(found_next == expected_next, f"{url}: next-archive {found_next} != {expected_next}")
        archives.append(document)
        url, newer = document.links.get("prev-archive"), document
    return current, archives


def archive_state(system: System, listing: Listing, fmt: str, published: dict[str, str]) -> Any:
    """The walk when it shows exactly `published` (URL -> title): each bulletin once across
    the archives, with its current title, and no other; else None (not yet built)."""
    current, archives = walk(system, listing, fmt)
    shown: dict[str, str] = {}
    for document in archives:
        for link, title in document.entries.items():
            # Twice: a month that lost it is not rebuilt yet.
            require(link not in shown, f"{link} twice, again in {document.url}")
            shown[link] = title
    require(shown == published, f"archives show {len(shown)}, not the {len(published)} published")
    require(set(current.entries) <= set(published), "the feed shows an unpublished bulletin")
    return current, archives


def settled(system: System, listing: Listing, published: dict[str, str]) -> dict[str, bytes]:
    """Wait until both formats' walks show `published`; returns URL -> bytes of every
    archive document."""
    documents: dict[str, bytes] = {}
    reasons = [""]
    for fmt in ("atom", "rss"):

        def state(fmt: str = fmt) -> Any:
            try:
                return archive_state(system, listing, fmt, published)
            except Unsettled as problem:
                reasons.append(str(problem))
                return None

        try:
            _, archives = eventually(state, f"{listing.target} {fmt} archives settle")
        except AssertionError as failure:
            raise AssertionError(f"{failure}; last: {reasons[-1]}") from None
        documents |= {document.url: document.body for document in archives}
    return documents


def month_of(url: str) -> str:
    """ "2011-01" of ".../2011-01-2.atom"."""
    return url.rsplit("/", 1)[1][:7]


def test_walking_prev_archive_reaches_every_published_bulletin_once(archived: System) -> None:
    system = archived
    slug, other = f"lt-{uuid.uuid4().hex[:6]}", f"lk-{uuid.uuid4().hex[:6]}"
    keys = {
        slug: system.create_agency("Sở Nội vụ", slug),
        other: system.create_agency("Sở Y tế", other),
    }
    # (agency, published_at): January has 5 of ours (two parts of 3), plus one of the other
    # agency's (so the site's January differs); March's only bulletin will be withdrawn.
    plan = [
        (slug, "2011-01-03T08:00:00Z"), (slug, "2011-01-05T08:00:00Z"),
        (other, "2011-01-06T08:00:00Z"), (slug, "2011-01-09T08:00:00Z"),
        (slug, "2011-01-20T08:00:00Z"), (slug, "2011-01-31T23:59:59Z"),
        (slug, "2011-02-10T08:00:00Z"), (slug, "2011-02-11T08:00:00Z"),
        (slug, "2011-03-15T08:00:00Z"),
        (other, "2011-04-01T00:00:00Z"),
        (slug, "2011-05-02T08:00:00Z"), (slug, "2011-05-03T08:00:00Z"),
        (slug, "2011-05-04T08:00:00Z"), (slug, "2011-05-05T08:00:00Z"),
        (slug, None), (other, None),  # now: the current month, also archived
        (slug, "2011-02-12T08:00:00Z"), (slug, "2011-02-13T08:00:00Z"),  # February: 2 parts
    ]  # fmt: skip
    docs: list[dict[str, Any]] = []
    for n, (agency, when) in enumerate(plan):
        with system.api(keys[agency]) as api:
            body: dict[str, Any] = {"title": f"Thông báo số {n} {agency}", "body": "Nội dung.",
                                    "category": "Tổ chức cán bộ" if n % 2 else None}  # fmt: skip
            if when is not None:
                body["published_at"] = when
            answer = api.post("/v1/bulletins", json=body)
            assert answer.status_code == 202, answer.text
            docs.append(system.wait_published(api, answer.json()["id"]) | {"agency": agency})

    base = system.gateway_url
    eventually(lambda: fetch(f"{base}/feeds/agency/{slug}/2011-02-2.atom").status_code == 200,
               "February's second part")  # fmt: skip
    # Corrections: a new title in January; February's second bulletin moved to May (February
    # shrinks to one part, May grows to two).
    # Withdrawals: one of January's, and March's only bulletin (March empties).
    with system.api(keys[slug]) as api:
        for n, changes in ((1, {"title": "Thông báo số 1 (đính chính)"}),
                           (7, {"published_at": "2011-05-06T08:00:00Z"})):  # fmt: skip
            document = docs[n]
            fields = {k: document[k] for k in ("title", "body", "published_at")} | changes
            answer = api.put(f"/v1/bulletins/{document['id']}", json=fields)
            assert answer.status_code == 202, answer.text
            docs[n] = system.wait_published(api, document["id"]) | {"agency": slug}
            assert docs[n]["revision"] == 2
        for n in (3, 8):
            assert api.delete(f"/v1/bulletins/{docs[n]['id']}").status_code == 202
    withdrawn = {docs[3]["url"], docs[8]["url"]}

    def published(agency: str | None) -> dict[str, str]:
        return {d["url"]: d["title"] for i, d in enumerate(docs)
                if i not in (3, 8) and agency in (None, d["agency"])}  # fmt: skip

    ours = Listing(ListingKind.AGENCY, slug)
    expected: dict[Listing, dict[str, str]] = {ours: published(slug), ALL: published(None)}
    before: dict[str, bytes] = {}
    for listing, wanted in expected.items():
        before |= settled(system, listing, wanted)
        assert not withdrawn & set(wanted)
    # The agency's months, oldest first: January (4 left: two parts), February (3 left after
    # the move: one part), no March (emptied), May (5 with the moved one: two parts), now.
    months = sorted({month_of(url) for url in before if f"/agency/{slug}/" in url})
    assert months[:3] == ["2011-01", "2011-02", "2011-05"]
    for gone in ("agency/{slug}/2011-03", "agency/{slug}/2011-01-3", "agency/{slug}/2011-02-2",
                 "all/2011-03", "all/2011-02-2"):  # fmt: skip
        for fmt in ("atom", "rss"):
            url = f"{base}/feeds/{gone.format(slug=slug)}.{fmt}"
            assert fetch(url).status_code == 404, url
    assert f"{base}/feeds/agency/{slug}/2011-01-2.atom" in before
    assert f"{base}/feeds/agency/{slug}/2011-05-2.atom" in before
    assert f"{base}/feeds/all/2011-04.atom" in before  # only the other agency's month
    assert f"{base}/feeds/agency/{slug}/2011-04.atom" not in before

    # `bantin rebuild` rewrites every archive document, with the same bytes, also onto a
    # site that lost the agency's archives.
    site = system.settings().resolved_site_dir
    stamps = {url: _stamp(site, base, url) for url in before}
    shutil.rmtree(site / "feeds" / "agency" / slug)
    done = system.cli("rebuild", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "feed archive months" in done.stdout
    after = {url: fetch(url).content for url in before}
    assert after == before
    rewritten = {url for url in before if _stamp(site, base, url) != stamps[url]}
    assert rewritten == set(before), "rebuild did not rewrite every archive document"
    stamps_now = {url: _stamp(site, base, url) for url in before}

    # A correction in an old month changes only the documents that show it.
    corrected = docs[4]  # January's third left of ours
    with system.api(keys[slug]) as api:
        fields = {k: corrected[k] for k in ("body", "published_at")}
        answer = api.put(f"/v1/bulletins/{corrected['id']}",
                         json=fields | {"title": "Thông báo đã đính chính"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        system.wait_published(api, corrected["id"])
    touched = {url for url, body in before.items() if corrected["url"].encode() in body}
    # One document per format in each listing: the agency's part 1 of January (its 4 left),
    # the site's part 2 (the other agency's bulletin comes before it there).
    assert {url.removeprefix(base) for url in touched} == {
        f"/feeds/{scope}.{fmt}" for scope in ("all/2011-01-2", f"agency/{slug}/2011-01")
        for fmt in ("atom", "rss")
    }  # fmt: skip
    eventually(lambda: all(fetch(url).content != before[url] for url in touched),
               "the corrected bulletin's documents rebuilt")  # fmt: skip
    for listing in expected:
        expected[listing][corrected["url"]] = "Thông báo đã đính chính"
        settled(system, listing, expected[listing])
    past = {url for url in before if month_of(url) < "2011-06"}
    changed = {url for url in past if fetch(url).content != before[url]}
    assert changed == touched
    # Not even rewritten with the same bytes: a build writes only the parts that changed.
    moved = {url for url in past if _stamp(site, base, url) != stamps_now[url]}
    assert moved == touched

    # A lost file (a site restored without it) comes back from the reconciler's check, and
    # so does everything Redis knew (a restart that lost its data): the same bytes again.
    now = {url: fetch(url).content for url in past}
    lost = f"{base}/feeds/agency/{slug}/2011-02.rss"
    _file(site, base, lost).unlink()
    eventually(lambda: fetch(lost).content == now[lost], "the lost archive rebuilt")
    stamps = {url: _stamp(site, base, url) for url in past}
    system.redis().flushall()  # the system's own embedded Redis, nobody else's
    eventually(lambda: all(_stamp(site, base, url) != stamps[url] for url in past),
               "every archive rebuilt once Redis forgot them")  # fmt: skip
    assert {url: fetch(url).content for url in past} == now


def _stamp(site: Path, base: str, url: str) -> tuple[int, int]:
    """Which file holds the document, and when it was written: a rewrite (a new file renamed
    into place) changes both, though a new file may reuse a deleted one's inode number."""
    found = _file(site, base, url).stat()
    return found.st_ino, found.st_mtime_ns


def _file(site: Path, base: str, url: str) -> Path:
    return site / url.removeprefix(base + "/")
