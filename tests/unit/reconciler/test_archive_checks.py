"""The reconciler asks for listings' archive checks a slice at a time, round the list."""

from __future__ import annotations

from collections import Counter

from services.reconciler.loop import ARCHIVE_CHECK_SLICE, ArchiveScan, _archive_checks, _slice
from shared.site import ALL, Listing, ListingKind, document


def test_every_listing_is_checked_once_per_round_a_slice_per_pass() -> None:
    listings = list(range(2 * ARCHIVE_CHECK_SLICE + 7))
    scan = ArchiveScan()
    passes = [_slice(listings, scan) for _ in range(3)]
    assert all(len(chosen) == ARCHIVE_CHECK_SLICE for chosen in passes)
    # Three passes cover the list once, wrapping round to its start.
    assert set(listings) <= {x for chosen in passes for x in chosen}
    assert passes[2][:7] == listings[-7:] and passes[2][7:] == listings[: ARCHIVE_CHECK_SLICE - 7]
    counts = Counter(x for chosen in passes[:2] for x in chosen)
    assert max(counts.values()) == 1
    assert passes[0][0] == 0 and passes[1][0] == ARCHIVE_CHECK_SLICE


def test_a_small_site_or_a_one_off_pass_checks_every_listing() -> None:
    few = list(range(ARCHIVE_CHECK_SLICE))
    assert _slice(few, ArchiveScan()) == few
    many = list(range(3 * ARCHIVE_CHECK_SLICE))
    assert _slice(many, None) == many  # reconcile_once without a scan: all of them


def test_documents_archives_take_a_round_of_their_own() -> None:
    """Thousands of cited documents must not stretch the round of the agencies' archives:
    every pass checks the next slice of each, and a full round of the site's listings still
    takes a single pass however many documents there are."""
    scopes = [ALL, *(Listing(ListingKind.AGENCY, f"agency-{n:02}") for n in range(20))]
    cited = [document(f"qd-ubnd-{n}-2024") for n in range(3 * ARCHIVE_CHECK_SLICE)]
    scan = ArchiveScan()
    passes = [_archive_checks(scopes + cited, scan) for _ in range(3)]
    for chosen in passes:
        assert chosen[: len(scopes)] == scopes  # all of them, every pass
        assert len(chosen) == len(scopes) + ARCHIVE_CHECK_SLICE
    checked = [listing for chosen in passes for listing in chosen[len(scopes) :]]
    assert checked == cited  # each document once in the round, in order
    assert _archive_checks(scopes + cited, None) == scopes + cited
