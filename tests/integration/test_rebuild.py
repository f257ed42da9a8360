"""`bantin rebuild` against the real system: every page, notice, index page and feed comes back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx

from services.cli.rebuild import run_rebuild
from shared.site import Listing, ListingKind, file_for, tombstone_for
from shared.testing import System


def test_rebuild_brings_back_every_page_notice_index_and_feed(system: System) -> None:
    slug = f"so-xay-dung-{uuid.uuid4().hex[:6]}"
    key = system.create_agency("Sở Xây dựng", slug)
    site = system.data_dir / "site"
    agency = Listing(ListingKind.AGENCY, slug)
    with system.api(key) as api:
        documents = []
        for n in range(3):
            answer = api.post("/v1/bulletins", json={
                "title": f"Thông báo số {n} về quy hoạch xây dựng", "summary": f"Tóm tắt {n}.",
                "body": f"Nội dung thông báo số {n}.\n\nĐoạn hai.", "category": "Xây dựng",
            })  # fmt: skip
            assert answer.status_code == 202, answer.text
            documents.append(system.wait_published(api, answer.json()["id"]))
        withdrawn, *published = documents
        assert api.delete(f"/v1/bulletins/{withdrawn['id']}").status_code == 202
        notice = tombstone_for(urlsplit(withdrawn["url"]).path)

        def withdrawal_done() -> bool:  # the notice is written just before that commit
            state = api.get(f"/v1/bulletins/{withdrawn['id']}").json()
            return bool(state["rendered_revision"] == state["revision"])

        wait_for(withdrawal_done, "the withdrawal's render")
        assert (site / notice).is_file()
        before = [api.get(f"/v1/bulletins/{d['id']}").json() for d in documents]

        # What a template change leaves behind, made observable: the files are gone.
        lost = [file_for(urlsplit(d["url"]).path) for d in published]
        lost += [notice, file_for(agency.page_path), file_for(agency.feed_path("rss")),
                 file_for(agency.feed_path("atom"))]  # fmt: skip
        for relative in lost:
            (site / relative).unlink()
        assert httpx.get(published[0]["url"]).status_code == 404

        # A short stall limit: workers that do not load services.render.batch (see
        # services/cli/worker.py) drop its messages, and the rebuild says so instead of hanging.
        report = run_rebuild(system.settings(), batch_size=2, progress=False, stall_seconds=10)

        assert report.counts.failed == 0
        assert report.counts.pages >= 2 and report.counts.tombstones >= 1
        assert report.listings_built == report.listings
        for relative in lost:
            assert (site / relative).is_file(), relative
        for document in published:
            page = httpx.get(document["url"])
            assert page.status_code == 200 and document["title"] in page.text
        assert httpx.get(withdrawn["url"]).status_code == 410
        feed = feedparser.parse(httpx.get(system.gateway_url + agency.feed_path("atom")).content)
        assert {entry.link for entry in feed.entries} == {d["url"] for d in published}
        index = httpx.get(system.gateway_url + agency.page_path)
        assert index.status_code == 200 and all(d["title"] in index.text for d in published)
        # A rebuild rewrites files only: no status, revision or date moved. (The reconciler's
        # page check may have re-rendered a deleted page meanwhile, which moves its
        # rendered_at and attempts: that is the repair working, not the rebuild.)
        after = [api.get(f"/v1/bulletins/{d['id']}").json() for d in documents]
        assert [_settled(state) for state in after] == [_settled(state) for state in before]


def _settled(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key not in ("rendered_at", "attempts")}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never appeared"
        time.sleep(0.02)
