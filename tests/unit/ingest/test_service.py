"""What ingest asks the builders for when a correction moves a bulletin out of listings."""

from __future__ import annotations

from typing import Any, cast

from services.ingest.service import refresh_listings
from shared.refresh import Job, Refresher
from shared.site import ARCHIVE_CHECK, Listing, ListingKind, archive


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.requested: list[tuple[Job, Listing]] = []
        self.fail = fail

    def request_many(self, wanted: list[tuple[Job, Any]]) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.requested += wanted


def test_a_left_listing_gets_its_page_feeds_and_archive_check() -> None:
    left = Listing(ListingKind.CATEGORY, "giao-duc")
    recorder = _Recorder()
    refresh_listings(cast(Refresher, recorder), [left])
    # The render worker knows only where the bulletin is now: the archive that still shows
    # it is found by the left listing's check, asked for here.
    assert set(recorder.requested) == {
        (Job.PAGE, left),
        (Job.FEED, left),
        (Job.FEED, archive(left, ARCHIVE_CHECK)),
    }


def test_a_down_redis_leaves_the_refresh_to_the_reconciler() -> None:
    refresh_listings(cast(Refresher, _Recorder(fail=True)), [Listing(ListingKind.AGENCY, "x")])
