"""The reconciler verifies every listing each pass but the documents', of which it takes a
rotating slice: one per document ever cited, a site may have tens of thousands."""

from __future__ import annotations

from services.reconciler.loop import DOCUMENT_CHECK_SLICE, ArchiveScan, _checked
from shared.site import ALL, Listing, ListingKind, document


def test_every_other_listing_and_a_rotating_slice_of_the_documents() -> None:
    agencies = [Listing(ListingKind.AGENCY, f"so-{n}") for n in range(3)]
    documents = [document(f"qd-ubnd-{n}-2024") for n in range(DOCUMENT_CHECK_SLICE * 2 + 10)]
    listings = [ALL, *agencies, *documents]
    scan = ArchiveScan()
    seen: set[Listing] = set()
    for _ in range(3):
        checked = _checked(listings, scan)
        assert checked[:4] == [ALL, *agencies]  # every pass
        assert len(checked) == 4 + DOCUMENT_CHECK_SLICE
        seen |= set(checked[4:])
    assert seen == set(documents)  # each document within a bounded number of passes
    assert _checked(listings, None) == listings  # reconcile_once without a scan: all
    few = [ALL, *documents[:5]]
    assert _checked(few, ArchiveScan()) == few
