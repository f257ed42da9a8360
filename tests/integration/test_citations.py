"""Legal-document citations through the running system (issue 12): the article links what
it cites, each document has a page and feeds listing the bulletins whose live revision cites
it, newest first across agencies, and corrections, withdrawals and races move bulletins
between them exactly as the database's live revisions say."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import lxml.html
import pytest
from sqlalchemy import delete, select

from services.cli.rebuild import run_rebuild
from shared.db import session_factory, session_scope
from shared.listings import newest_bulletins
from shared.models import Citation, LegalDocument
from shared.site import document, file_for
from shared.storage import open_storage
from shared.testing import System
from tests.integration.consistency import (
    feed_entries,
    in_parallel,
    index_page,
    new_agency,
    reader,
    send,
    token,
    until_consistent,
    wait_settled,
)
from tests.integration.test_json_feed import json_feed

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"
# The five documents the sample cites in full, by their citation keys.
SAMPLE_DOCUMENTS = {
    "qd-ttg-628-2020": "Quyết định số 628/QĐ-TTg",
    "kl-tw-51-2019": "Kết luận số 51-KL/TW",
    "nq-tw-29": "Nghị quyết số 29-NQ/TW",
    "nq-cp-44-2014": "Nghị quyết số 44/NQ-CP",
    "qd-ubnd-1385": "Quyết định số 1385/QĐ-UBND",
}
Q628 = "qd-ttg-628-2020"
KL51 = "kl-tw-51-2019"
CITES_628 = "Quyết định số 628/QĐ-TTg ngày 11/5/2020"
CITES_51 = "Kết luận số 51-KL/TW ngày 30/5/2019"


def unique_document() -> tuple[str, str]:
    """(citation, key) of a decision no other test cites: its page holds this test's only."""
    number = random.randrange(10_000, 99_999)
    return f"Quyết định số {number}/QĐ-UBND ngày 2/3/2024", f"qd-ubnd-{number}-2024"


def page_path(url: str) -> str:
    return urlsplit(url).path


def listed(system: System, key: str) -> list[str]:
    """The article paths a document's page lists, in order ([] while it has no page)."""
    html = index_page(system, document(key).page_path)
    if not html:
        return []
    page = lxml.html.fromstring(html)
    return [page_path(h) for h in page.xpath('//ol[@class="items"]//h3/a/@href')]


def in_feeds(system: System, key: str) -> dict[str, list[str]]:
    """The entry ids of each of a document's feeds, in order ([] while it has none); RSS and
    Atom must parse cleanly, JSON Feed must match its schema."""
    listing = document(key)
    found = {fmt: list(feed_entries(system, listing.feed_path(fmt))) for fmt in ("rss", "atom")}
    feed = json_feed(system, listing.feed_path("json"))
    found["json"] = [] if feed is None else [item["id"] for item in feed["items"]]
    return found


def index_counts(system: System) -> dict[str, int]:
    """Document key -> the count /van-ban/ shows."""
    html = index_page(system, "/van-ban/")
    if not html:
        return {}
    counts = {}
    for item in lxml.html.fromstring(html).xpath('//ol[contains(@class, "documents")]/li'):
        (href,) = item.xpath(".//h3/a/@href")
        meta = item.xpath('string(.//p[@class="item__meta"])')
        # "1.234 bản tin": Vietnamese groups thousands with dots.
        counts[page_path(href).strip("/").split("/")[-1]] = int(
            meta.split("·")[-1].split()[0].replace(".", "")
        )
    return counts


def lists(system: System, key: str, url: str) -> Callable[[], list[str]]:
    """A check for `until_consistent`: the document's page lists the article at `url`."""

    def check() -> list[str]:
        return [] if page_path(url) in listed(system, key) else [f"{key} does not list {url}"]

    return check


def mismatches(system: System, key: str, wanted: list[dict[str, Any]]) -> list[str]:
    """How the document's page and feeds differ from `wanted` (status documents, newest
    first): exactly those bulletins, in that order, each once."""
    wrong = []
    paths = [page_path(d["url"]) for d in wanted]
    if (shown := listed(system, key)) != paths:
        wrong.append(f"page of {key}: {shown} != {paths}")
    guids = [d["guid"] for d in wanted]
    for fmt, ids in in_feeds(system, key).items():
        if ids != guids:
            wrong.append(f"{fmt} feed of {key}: {ids} != {guids}")
    return wrong


def publish(api: httpx.Client, title: str, body: str) -> dict[str, Any]:
    answer = api.post("/v1/bulletins", json={"title": title, "body": body})
    assert answer.status_code == 202, answer.text
    return wait_settled(api, [answer.json()["id"]])[answer.json()["id"]]


def test_the_sample_links_its_documents_and_each_lists_it_with_another_agencys(
    system: System,
) -> None:
    _slug, key = new_agency(system, "UBND tỉnh Bắc Kạn")
    done = system.cli("publish", str(SAMPLE), "--key", key, "--api", system.ingest_url)
    assert done.returncode == 0, done.stdout + done.stderr
    url = done.stdout.strip().splitlines()[-1]
    with system.api(key) as api:
        sample = wait_settled(api, [int(url.rsplit("-", 1)[1].removesuffix(".html"))])
    (sample_status,) = sample.values()

    page = lxml.html.fromstring(reader().get(url).content)
    # The lead and the body: the sample's first paragraph is its lead.
    text = page.xpath('//p[@class="lead"] | //div[@class="article__body"]')
    linked = {page_path(h) for part in text for h in part.xpath(".//a/@href")}
    assert {f"/van-ban/{k}/" for k in SAMPLE_DOCUMENTS} <= linked
    # A short name nothing in the bulletin resolves stays plain text.
    assert "Quyết định 1696" in " ".join(part.text_content() for part in text)
    assert not [a for part in text for a in part.xpath(".//a") if "1696" in a.text_content()]
    cited = page.xpath('//section[@class="cited"]//a/@href')
    assert {page_path(h) for h in cited} == {f"/van-ban/{k}/" for k in SAMPLE_DOCUMENTS}

    for found in SAMPLE_DOCUMENTS:
        until_consistent(lists(system, found, url))

    _other, other_key = new_agency(system, "Sở Giáo dục và Đào tạo")
    with system.api(other_key) as api:
        second = publish(api, f"Triển khai {token()}", f"Thực hiện {CITES_628} của Thủ tướng.")

    def both_newest_first() -> list[str]:
        wrong = []
        for name, shown in [("page", listed(system, Q628)), *in_feeds(system, Q628).items()]:
            wanted = (
                [page_path(second["url"]), page_path(url)]
                if name == "page"
                else [second["guid"], sample_status["guid"]]
            )
            if [item for item in shown if item in wanted] != wanted:
                wrong.append(f"{name} of {Q628}: {shown} lacks {wanted} in that order")
        return wrong

    until_consistent(both_newest_first)
    # The second bulletin cites only the decision: no other document lists it.
    assert page_path(second["url"]) not in listed(system, KL51)
    # /van-ban/ aggregates every citation: under load it is rebuilt at most as often as a
    # sitemap (shared.refresh), so it catches up a few seconds after the document's page.
    until_consistent(lambda: [] if index_counts(system).get(Q628, 0) >= 2 else ["628 counted once"])


def test_a_correction_and_a_withdrawal_move_the_bulletin_off_document_pages(
    system: System,
) -> None:
    cite, own = unique_document()
    _slug, key = new_agency(system, "Sở Tư pháp")
    with system.api(key) as api:
        text = f"Căn cứ {CITES_628}, {CITES_51} và {cite}."
        bulletin = publish(api, f"Thông báo {token()}", text)
        until_consistent(lambda: mismatches(system, own, [bulletin]))
        for found in (Q628, KL51):
            until_consistent(lists(system, found, bulletin["url"]))
        until_consistent(lambda: [] if index_counts(system).get(own) == 1 else ["no count"])

        # A correction that drops the decision: off its page and feeds, still on the others.
        answer = api.put(
            f"/v1/bulletins/{bulletin['id']}",
            json={"title": bulletin["title"], "body": f"Căn cứ {CITES_51} và {cite}."},
        )
        assert answer.status_code == 202, answer.text
        corrected = wait_settled(api, [bulletin["id"]])[bulletin["id"]]

        def left_628() -> list[str]:
            wrong = []
            if page_path(bulletin["url"]) in listed(system, Q628):
                wrong.append("still on the decision's page")
            wrong += [f"still in its {fmt} feed" for fmt, ids in in_feeds(system, Q628).items()
                      if bulletin["guid"] in ids]  # fmt: skip
            if page_path(bulletin["url"]) not in listed(system, KL51):
                wrong.append("gone from the conclusion's page")
            return wrong + mismatches(system, own, [corrected])

        until_consistent(left_628)
        citations = api.get(f"/v1/bulletins/{bulletin['id']}").json().get("citations")
        if citations is not None:  # the ingest API's field (helper C)
            assert {c["key"] for c in citations} == {KL51, own}

        # A withdrawal: off every document's page and feeds, and out of /van-ban/'s counts.
        assert api.delete(f"/v1/bulletins/{bulletin['id']}").status_code == 202
        wait_settled(api, [bulletin["id"]])

        def gone_everywhere() -> list[str]:
            wrong = mismatches(system, own, [])
            if page_path(bulletin["url"]) in listed(system, KL51):
                wrong.append("still on the conclusion's page")
            wrong += [f"still in its {fmt} feed" for fmt, ids in in_feeds(system, KL51).items()
                      if bulletin["guid"] in ids]  # fmt: skip
            if own in index_counts(system):
                wrong.append("/van-ban/ still counts it")
            return wrong

        until_consistent(gone_everywhere)


# -- races ----------------------------------------------------------------------------------

CORRECTIONS = 4  # per client
CLIENTS = 3


def test_racing_corrections_citations_and_a_withdrawal_end_as_the_database_says(
    system: System,
) -> None:
    """Three clients correct one bulletin at once, each correction citing the document or
    not; meanwhile another agency publishes a bulletin citing it, and a third bulletin that
    cites it is withdrawn. Once all is settled, the document's page and feeds list exactly
    the bulletins whose live revision cites it (read from the database), newest first, each
    once; and that is what the last accepted correction says."""
    cite, own = unique_document()
    _a, key_a = new_agency(system, "Sở Y tế")
    _b, key_b = new_agency(system, "Sở Nội vụ")
    with system.api(key_a) as api_a, system.api(key_b) as api_b:
        target = publish(api_a, f"Lịch {token()}", f"Theo {cite}.")
        doomed = publish(api_a, f"Hủy {token()}", f"Theo {cite} và {CITES_51}.")

        def corrections(seed: int) -> list[tuple[int, bool]]:
            """(revision, cites) of each correction this client got accepted."""
            rng = random.Random(seed)
            accepted = []
            for _ in range(CORRECTIONS):
                cites = rng.random() < 0.5
                body = f"Nội dung {token()}" + (f", theo {cite}." if cites else ".")
                answer = send(api_a, "PUT", f"/v1/bulletins/{target['id']}",
                              json={"title": target["title"], "body": body})  # fmt: skip
                assert answer.status_code == 202, answer.text
                accepted.append((answer.json()["revision"], cites))
            return accepted

        def another_agency() -> Any:
            content = {"title": f"Hướng dẫn {token()}", "body": f"Căn cứ {cite}."}
            return send(api_b, "POST", "/v1/bulletins", json=content)

        def withdrawal() -> Any:
            return send(api_a, "DELETE", f"/v1/bulletins/{doomed['id']}")

        tasks: list[Callable[[], Any]] = [
            *(partial(corrections, seed) for seed in range(CLIENTS)),
            another_agency,
            withdrawal,
        ]
        results = in_parallel(tasks, workers=len(tasks))
        created, withdrawn = results[-2], results[-1]
        assert created.status_code == 202 and withdrawn.status_code == 202
        accepted = sorted(change for result in results[:CLIENTS] for change in result)
        assert len({revision for revision, _ in accepted}) == len(accepted)  # none lost
        settled_a = wait_settled(api_a, [target["id"], doomed["id"]])
        settled_b = wait_settled(api_b, [created.json()["id"]])

    final = settled_a[target["id"]]
    assert final["revision"] == accepted[-1][0] and final["status"] == "published"
    assert settled_a[doomed["id"]]["status"] == "withdrawn"
    # What the database's live revisions say the document lists, newest first.
    with session_factory(system.settings())() as session:
        live = [b.id for b in newest_bulletins(session, document(own), 50)]
    statuses = {**settled_a, **settled_b}
    # ... which is what the clients were told: the last correction decides for the target.
    expected = {created.json()["id"]} | ({target["id"]} if accepted[-1][1] else set())
    assert set(live) == expected, (live, accepted)
    until_consistent(lambda: mismatches(system, own, [statuses[i] for i in live]))
    # The withdrawn bulletin is on none of the documents it cited.
    assert page_path(doomed["url"]) not in listed(system, KL51)


@pytest.fixture(autouse=True)
def _fresh_unique_numbers() -> None:
    # Unique document numbers per test, whatever order or subset runs.
    random.seed(uuid.uuid4().int)


def test_rebuild_after_an_upgrade_extracts_the_citations_of_live_pages(system: System) -> None:
    """A bulletin published by a release without citations (made here by deleting its rows,
    its document and the document's files): `bantin rebuild` extracts them, and then builds
    the document's page and feeds and counts it on /van-ban/."""
    cite, own = unique_document()
    _slug, key = new_agency(system, "Sở Công Thương")
    with system.api(key) as api:
        bulletin = publish(api, f"Kế hoạch {token()}", f"Thực hiện {cite}.")
    until_consistent(lambda: mismatches(system, own, [bulletin]))
    storage = open_storage(system.settings())
    listing = document(own)
    with session_scope(system.settings()) as session:
        session.execute(delete(Citation).where(Citation.bulletin_id == bulletin["id"]))
        session.execute(delete(LegalDocument).where(LegalDocument.key == own))
    for path in [listing.page_path, *(listing.feed_path(fmt) for fmt in ("rss", "atom", "json"))]:
        storage.delete(file_for(path))
    assert listed(system, own) == []

    report = run_rebuild(system.settings(), batch_size=50, progress=False, stall_seconds=20)

    assert report.counts.failed == 0 and report.listings_built == report.listings
    with session_factory(system.settings())() as session:
        rows = session.scalars(select(Citation).where(Citation.bulletin_id == bulletin["id"]))
        assert [(row.document_key, row.revision) for row in rows] == [(own, bulletin["revision"])]
    until_consistent(lambda: mismatches(system, own, [bulletin]))
    until_consistent(lambda: [] if index_counts(system).get(own) == 1 else ["no count"])
