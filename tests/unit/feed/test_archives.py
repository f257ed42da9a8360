"""RFC 5005 archives: URL layout, the cut into parts and their links, and the documents."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from lxml import etree

from services.feed.archives import label, paths, plan_parts
from services.feed.feeds import FH_NS, History, build_archive
from shared.listings import ArchiveMonth, Neighbours, month_fingerprints, parts_of
from shared.refresh import ARCHIVE_REBUILD_INTERVAL, SITEMAP_REBUILD_INTERVAL, rebuild_interval
from shared.settings import Settings
from shared.site import (
    ALL,
    ARCHIVE_CHECK,
    Listing,
    ListingKind,
    archive,
    archive_path,
)
from shared.site import document as document_listing
from tests.unit.feed.test_feeds import (
    AGENCY_LISTING,
    CATEGORY_LISTING,
    NS,
    PUBLIC,
    build,
    newest_first,
    parsed,
    settings,  # noqa: F401 - the fixture
)

# The gateway's and nginx's match for archive URLs (long cache for past months): the
# layout must stay exactly this.
GATEWAY_ARCHIVE = re.compile(
    r"^/feeds/(all|agency/[^/]+|category/[^/]+|document/[^/]+)/[0-9]{4}-[0-9]{2}(-[0-9]+)?"
    r"\.(rss|atom)$"
)
AROUND = Neighbours(prev=("2011-01", 2), next="2011-04")


# --- URLs and build targets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("listing", "part", "fmt", "path"),
    [
        (ALL, 1, "atom", "/feeds/all/2011-02.atom"),
        (ALL, 2, "rss", "/feeds/all/2011-02-2.rss"),
        (AGENCY_LISTING, 1, "rss", "/feeds/agency/ubnd-bac-kan/2011-02.rss"),
        (CATEGORY_LISTING, 12, "atom", "/feeds/category/giao-duc/2011-02-12.atom"),
        (
            document_listing("qd-ttg-628-2020"),
            1,
            "rss",
            "/feeds/document/qd-ttg-628-2020/2011-02.rss",
        ),
    ],
)
def test_archive_paths_follow_the_layout_the_gateway_caches(
    listing: Listing, part: int, fmt: str, path: str
) -> None:
    assert archive_path(listing, "2011-02", part, fmt) == path
    assert GATEWAY_ARCHIVE.match(path)
    # Never shadowing the subscription feeds beside them.
    assert path not in {listing.feed_path(f) for f in ("rss", "atom", "json")}


@pytest.mark.parametrize(
    ("month", "part", "fmt"),
    [("2011-13", 1, "atom"), ("2011-02", 0, "atom"), ("2011-02", 1, "json")],
)
def test_no_path_for_a_bad_month_part_or_format(month: str, part: int, fmt: str) -> None:
    with pytest.raises(ValueError):
        archive_path(ALL, month, part, fmt)


def test_archive_targets_round_trip_and_bad_ones_are_refused() -> None:
    for listing in (ALL, AGENCY_LISTING, CATEGORY_LISTING):
        for month in ("2011-02", ARCHIVE_CHECK):
            target = archive(listing, month)
            assert Listing.from_target(target.target) == target
            assert target.archive_scope == (listing, month)
    for bad in ("archive:all@2011-13", "archive:all", "archive:sitemap:index@2011-02",
                "archive:archive:all@2011-02@2011-02", "archive:agency:@2011-02"):  # fmt: skip
        with pytest.raises(ValueError):
            Listing.from_target(bad)
    with pytest.raises(ValueError):
        archive(ALL, "2011-02").feed_path("atom")  # an archive month has no feeds of its own


def test_archive_months_rebuild_at_most_once_a_second_checks_like_sitemaps() -> None:
    assert rebuild_interval(archive(ALL, "2011-02")) == ARCHIVE_REBUILD_INTERVAL
    assert rebuild_interval(archive(ALL, ARCHIVE_CHECK)) == SITEMAP_REBUILD_INTERVAL


# --- the cut into parts and the neighbour links --------------------------------------------


def versions(count: int, revision: int = 1) -> list[tuple[int, int]]:
    return [(i, revision) for i in range(1, count + 1)]


def test_a_month_is_cut_oldest_first_into_linked_parts() -> None:
    parts = plan_parts("2011-02", versions(7), 3, AROUND)
    assert [[i for i, _ in p.versions] for p in parts] == [[1, 2, 3], [4, 5, 6], [7]]
    assert [p.number for p in parts] == [1, 2, 3]
    # Older neighbour of part 1: the last part of the previous non-empty month.
    assert [p.prev for p in parts] == [("2011-01", 2), ("2011-02", 1), ("2011-02", 2)]
    # Newer neighbour of the last part: part 1 of the next non-empty month.
    assert [p.next for p in parts] == [("2011-02", 2), ("2011-02", 3), ("2011-04", 1)]


def test_the_oldest_and_newest_months_have_one_side_unlinked() -> None:
    (only,) = plan_parts("2011-02", versions(2), 3, Neighbours(None, None))
    assert (only.prev, only.next) == (None, None)
    assert plan_parts("2011-02", [], 3, AROUND) == []
    assert [parts_of(n, 3) for n in (0, 1, 3, 4, 6, 7)] == [0, 1, 1, 2, 2, 3]


def test_a_growing_month_changes_only_its_last_parts() -> None:
    before = plan_parts("2011-02", versions(7), 3, AROUND)
    after = plan_parts("2011-02", versions(8), 3, AROUND)
    assert [p.fingerprint for p in before[:2]] == [p.fingerprint for p in after[:2]]
    assert before[2].fingerprint != after[2].fingerprint
    # A new part: the old last part now links to it instead of to the next month.
    grown = plan_parts("2011-02", versions(10), 3, AROUND)
    assert grown[2].next == ("2011-02", 4) and grown[2].fingerprint != after[2].fingerprint
    assert [p.fingerprint for p in grown[:2]] == [p.fingerprint for p in before[:2]]


def test_a_correction_or_a_new_neighbour_changes_the_part_that_shows_it() -> None:
    base = plan_parts("2011-02", versions(7), 3, AROUND)
    corrected = plan_parts("2011-02", [*versions(4), (5, 2), (6, 1), (7, 1)], 3, AROUND)
    assert [a.fingerprint == b.fingerprint for a, b in zip(base, corrected, strict=True)] == [
        True, False, True,
    ]  # fmt: skip
    relinked = plan_parts("2011-02", versions(7), 3, Neighbours(("2010-12", 1), "2011-04"))
    assert [a.fingerprint == b.fingerprint for a, b in zip(base, relinked, strict=True)] == [
        False, True, True,
    ]  # fmt: skip


def test_month_fingerprints_name_each_months_neighbours() -> None:
    moment = datetime(2011, 2, 3, tzinfo=UTC)
    months = [
        ArchiveMonth("2011-01", 4, 10, 4, moment),
        ArchiveMonth("2011-02", 1, 5, 1, moment),
        ArchiveMonth("2011-04", 2, 13, 3, moment),
    ]
    found = month_fingerprints(months, 3)
    assert found["2011-01"].endswith("||2011-02")
    assert found["2011-02"].endswith("|2011-01#2|2011-04")  # January takes two parts of 3
    assert found["2011-04"].endswith("|2011-02#1|")
    # One more bulletin in January changes January's, and February's link to its last part.
    months[0] = ArchiveMonth("2011-01", 7, 30, 7, moment)
    again = month_fingerprints(months, 3)
    assert again["2011-02"].endswith("|2011-01#3|2011-04") and again["2011-04"] == found["2011-04"]


# --- the documents ---------------------------------------------------------------------------


def history(listing: Listing, part: int = 2) -> History:
    return History(
        archive=paths(listing, ("2024-03", part)),
        prev=paths(listing, ("2024-03", part - 1)) if part > 1 else paths(listing, ("2024-01", 1)),
        next=paths(listing, ("2024-04", 1)),
        label=label("2024-03", part),
    )


def canonical(document: bytes, path: str) -> list[bytes]:
    """The elements at `path`, each in exclusive C14N (only the namespaces it uses)."""
    found = etree.fromstring(document).iterfind(path, NS)
    return [etree.tostring(e, method="c14n", exclusive=True) for e in found]


def links(document: bytes, path: str) -> dict[str, str]:
    root = etree.fromstring(document)
    return {link.get("rel"): link.get("href") for link in root.iterfind(path, NS)}


@pytest.mark.parametrize("listing", [ALL, AGENCY_LISTING, CATEGORY_LISTING])
def test_an_archive_document_is_marked_linked_and_valid(
    settings: Settings,  # noqa: F811
    listing: Listing,
) -> None:
    bulletins = newest_first(3)
    title = {ListingKind.ALL: "Bản tin", ListingKind.AGENCY: "UBND tỉnh Bắc Kạn"}.get(
        listing.kind, "Giáo dục"
    )
    built = build_archive(listing, title, bulletins, settings, history(listing))
    feeds = build(settings, bulletins, listing)
    base = f"{PUBLIC}{archive_path(listing, '2024-03', 1, 'atom')[: -len('2024-03.atom')]}"
    for fmt, document, path in (
        ("atom", built.atom, "atom:link"),
        ("rss", built.rss, "channel/atom:link"),
    ):
        parsed(document)  # well-formed, and feedparser reads it without complaint
        root = etree.fromstring(document)
        marker = root.find(("" if fmt == "atom" else "channel/") + f"{{{FH_NS}}}archive")
        assert marker is not None and len(marker) == 0 and not marker.text
        found = links(document, path)
        assert found["self"] == f"{base}2024-03-2.{fmt}"
        assert found["current"] == f"{PUBLIC}{listing.feed_path(fmt)}"
        assert found["prev-archive"] == f"{base}2024-03.{fmt}"
        assert found["next-archive"] == f"{base}2024-04.{fmt}"
        assert "hub" not in found  # only the subscription feeds are WebSub topics
    # The same entries as the feed, in the same (newest first) order, the same XML each.
    for path, archived, current in (("atom:entry", built.atom, feeds.atom),
                                    ("channel/item", built.rss, feeds.rss)):  # fmt: skip
        assert canonical(archived, path) == canonical(current, path)
        assert len(canonical(archived, path)) == len(bulletins)
    # The Atom id is the document's own URL, unique among the listing's documents.
    assert etree.fromstring(built.atom).findtext("atom:id", namespaces=NS) == (
        f"{base}2024-03-2.atom"
    )
    assert "phần 2" in etree.fromstring(built.atom).findtext("atom:title", namespaces=NS)
    # Deterministic: a second build gives the same bytes.
    assert build_archive(listing, title, bulletins, settings, history(listing)) == built


def test_an_archive_needs_its_own_paths(settings: Settings) -> None:  # noqa: F811
    with pytest.raises(ValueError):
        build_archive(ALL, "Bản tin", newest_first(1), settings, History())


def test_the_subscription_feed_links_its_newest_archive(settings: Settings) -> None:  # noqa: F811
    from services.feed.feeds import build_feeds

    newest = paths(AGENCY_LISTING, ("2024-03", 3))
    assert newest is not None
    feeds = build_feeds(AGENCY_LISTING, "UBND tỉnh Bắc Kạn", newest_first(2), settings, newest)
    for document, path, fmt in ((feeds.atom, "atom:link", "atom"),
                                (feeds.rss, "channel/atom:link", "rss")):  # fmt: skip
        parsed(document)
        found = links(document, path)
        assert found["prev-archive"] == PUBLIC + newest[fmt]
        assert "current" not in found and "next-archive" not in found
        assert etree.fromstring(document).find(f".//{{{FH_NS}}}archive") is None
    # Without archives (an empty listing) the feed is as before: no history link.
    plain = build(settings, newest_first(2))
    assert "prev-archive" not in links(plain.atom, "atom:link")
    assert "prev-archive" not in links(plain.rss, "channel/atom:link")
