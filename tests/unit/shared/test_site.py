"""The URL layout of legal-document listings (shared.site): one place names every path."""

from __future__ import annotations

import pytest

from shared.site import (
    DOCUMENTS,
    RESERVED_SLUGS,
    Listing,
    ListingKind,
    archive,
    archive_path,
    document,
    listings_of,
)


def test_a_document_listing_has_a_page_feeds_and_archives_under_its_key() -> None:
    listing = document("qd-ttg-628-2020")
    assert listing.target == "document:qd-ttg-628-2020"
    assert Listing.from_target(listing.target) == listing
    assert listing.page_path == "/van-ban/qd-ttg-628-2020/"
    assert [listing.feed_path(fmt) for fmt in ("rss", "atom", "json")] == [
        "/feeds/document/qd-ttg-628-2020.rss",
        "/feeds/document/qd-ttg-628-2020.atom",
        "/feeds/document/qd-ttg-628-2020.json",
    ]
    assert (
        archive_path(listing, "2020-07", 2, "atom")
        == "/feeds/document/qd-ttg-628-2020/2020-07-2.atom"
    )
    month = archive(listing, "2020-07")
    assert Listing.from_target(month.target).archive_scope == (listing, "2020-07")


def test_the_documents_index_is_one_keyless_page_with_no_feeds() -> None:
    assert DOCUMENTS.target == "documents"
    assert Listing.from_target("documents") == DOCUMENTS
    assert DOCUMENTS.page_path == "/van-ban/"
    with pytest.raises(ValueError):
        DOCUMENTS.feed_path("rss")
    with pytest.raises(ValueError):
        archive(DOCUMENTS, "2020-07")


@pytest.mark.parametrize(
    "target",
    [
        "document:",  # no key
        "documents:qd-ttg-628-2020",  # the index has none
        "document:QD-TTg-628",  # keys are lowercase ASCII
        "document:qd/ttg",  # no slash: it would leave the listing's directory
        "document:-qd",
        "document:qd-",
        "document:" + "a" * 121,
        "document:kế-hoạch",
    ],
)
def test_a_malformed_document_target_is_refused(target: str) -> None:
    with pytest.raises(ValueError):
        Listing.from_target(target)


def test_no_agency_can_take_the_documents_path_and_a_bulletin_s_own_listings_are_unchanged() -> (
    None
):
    assert "van-ban" in RESERVED_SLUGS
    # Document listings come from the bulletin's text (the render step), not its metadata.
    assert all(
        listing.kind is not ListingKind.DOCUMENT for listing in listings_of("bac-kan", "giao-duc")
    )
