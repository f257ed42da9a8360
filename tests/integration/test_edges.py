"""Issue 7's promises at the edges, through the whole running system on SQLite and PostgreSQL.

One agency's unstorable values must never fail another agency's submissions (the group
writer shares transactions between agencies); a withdrawal sent right after a submission must
take the page down for good; a re-embargo racing the first render must never leave a public
page behind a "scheduled" status; simultaneous corrections must all count, in order, with
If-Match to refuse a stale one; huge ids are 404; and no public URL comes from the Host header.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from shared.testing import System
from tests.integration.consistency import (
    Staircase,
    feed_entries,
    in_parallel,
    index_page,
    is_settled,
    new_agency,
    path_of,
    public_status,
    race,
    reader,
    rows_by_agency,
    send,
    token,
    until_consistent,
    wait_settled,
)
from tests.unit.ingest.test_edges import BEYOND_64_BITS, EVIL, UNSTORABLE

CLIENTS = 4  # client threads per test; the machine has 2 cores


def later() -> str:
    """An embargo that never comes due during the test."""
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def fields_of(document: dict[str, Any]) -> set[str]:
    return {error["field"] for error in document.get("errors", [])}


def summary(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(answer.status_code for answer in answers)


def post_singles(
    system: System, key: str, tag: str, client: int, count: int
) -> list[httpx.Response]:
    """`count` valid bulletins from one client thread, titled by tag, client and index."""
    with system.api(key) as api:
        return [
            send(
                api,
                "POST",
                "/v1/bulletins",
                json={"title": f"A {tag} {client}-{i}", "body": "Tốt."},
            )
            for i in range(count)
        ]


# Defect 1: one agency's unstorable value must not fail another agency's requests ---------


def test_unstorable_values_of_one_agency_never_fail_another(system: System) -> None:
    slug_a, key_a = new_agency(system, "Sở Y tế")
    slug_b, key_b = new_agency(system, "Sở Xây dựng")
    tag, per_client = token(), 50
    normal = partial(post_singles, system, key_a, tag, count=per_client)

    def unstorable(client: int) -> list[tuple[str, httpx.Response]]:
        with system.api(key_b) as api:
            sent = []
            for i in range(per_client):
                field, value = UNSTORABLE[i % len(UNSTORABLE)]
                body = {"title": f"B {tag} {client}-{i}", "body": "Xấu.", field: value}
                sent.append((field, send(api, "POST", "/v1/bulletins", json=body)))
            return sent

    a1, a2, b1, b2 = race(
        [partial(normal, 0), partial(normal, 1), partial(unstorable, 0), partial(unstorable, 1)]
    )
    normal_answers, refused = a1 + a2, b1 + b2
    every = normal_answers + [answer for _field, answer in refused]
    assert not [a.text for a in every if a.status_code >= 500], summary(every)
    assert summary(normal_answers) == {202: 2 * per_client}, summary(normal_answers)
    wrong = [
        (field, a.status_code, a.text)
        for field, a in refused
        if a.status_code != 422 or fields_of(a.json()) != {field}
    ]
    assert not wrong, wrong[:5]
    assert set(rows_by_agency(system, slug_a).values()) == {1}
    assert len(rows_by_agency(system, slug_a)) == 2 * per_client
    assert rows_by_agency(system, slug_b) == Counter()


def test_a_batch_with_unstorable_items_stores_the_rest_and_spares_other_agencies(
    system: System,
) -> None:
    slug_a, key_a = new_agency(system, "Sở Công Thương")
    slug_b, key_b = new_agency(system, "Sở Nội vụ")
    tag, batches, singles = token(), 10, 30
    bad = [{field: value} for field, value in UNSTORABLE]

    def batch_items(client: int, n: int) -> list[dict[str, Any]]:
        def item(i: int, extra: dict[str, str]) -> dict[str, Any]:
            return {"title": f"B {tag} {client}-{n}-{i}", "body": "Lô.", **extra}

        return [
            item(0, {}),
            item(1, bad[0]),
            item(2, {}),
            item(3, bad[2]),
            item(4, bad[1]),
            item(5, {}),
        ]

    def batching(client: int) -> list[tuple[list[dict[str, Any]], httpx.Response]]:
        with system.api(key_b) as api:
            sent = []
            for n in range(batches):
                items = batch_items(client, n)
                sent.append(
                    (items, send(api, "POST", "/v1/bulletins:batch", json={"bulletins": items}))
                )
            return sent

    normal = partial(post_singles, system, key_a, tag, count=singles)

    a1, a2, b1, b2 = race(
        [partial(normal, 0), partial(normal, 1), partial(batching, 0), partial(batching, 1)]
    )
    assert summary(a1 + a2) == {202: 2 * singles}, summary(a1 + a2)
    stored_b: Counter[str] = Counter()
    for items, answer in b1 + b2:
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["status"] for r in results] == [202, 422, 202, 422, 422, 202], results
        assert [fields_of(results[i]["problem"]) for i in (1, 3, 4)] == [
            {"published_at"},
            {"language"},
            {"published_at"},
        ]
        stored_b.update(items[r["index"]]["title"] for r in results if r["status"] == 202)
    # The answers say exactly what was stored: each 202 item once, nothing else.
    assert rows_by_agency(system, slug_b) == stored_b
    assert len(rows_by_agency(system, slug_a)) == 2 * singles


# Defect 2: a withdrawal right after a submission; a re-embargo racing the first render -----


def test_a_withdrawal_right_after_submission_takes_the_page_down_for_good(system: System) -> None:
    slug, key = new_agency(system, "Sở Giao thông Vận tải")
    rounds = 200

    def steer(api: httpx.Client, staircase: Staircase, unjudged: list[int]) -> None:
        """For each earlier withdrawal now settled: did it come before the page went public
        (no render of it ever went live), or after?"""
        for bulletin_id in list(unjudged):
            document = api.get(f"/v1/bulletins/{bulletin_id}").json()
            if is_settled(document):
                staircase.came(early=document["rendered_at"] is None)
                unjudged.remove(bulletin_id)

    def client(n: int) -> list[dict[str, Any]]:
        staircase = Staircase(seed=n)
        made: list[dict[str, Any]] = []
        unjudged: list[int] = []
        with system.api(key) as api:
            for i in range(rounds // CLIENTS):
                steer(api, staircase, unjudged)
                created = api.post("/v1/bulletins", json={"title": f"Rút {n}-{i}", "body": "Nhầm."})
                assert created.status_code == 202, created.text
                time.sleep(staircase.delay())
                gone = api.delete(f"/v1/bulletins/{created.json()['id']}")
                assert gone.status_code == 202 and gone.json()["status"] == "withdrawn", gone.text
                made.append(created.json())
                unjudged.append(created.json()["id"])
        return made

    made = [
        bulletin
        for part in in_parallel([partial(client, n) for n in range(CLIENTS)], workers=CLIENTS)
        for bulletin in part
    ]
    with system.api(key) as api:
        settled = wait_settled(api, [b["id"] for b in made])
        assert Counter(d["status"] for d in settled.values()) == {"withdrawn": rounds}
        public = sum(d["rendered_at"] is not None for d in settled.values())
        print(f"{rounds} withdrawals: {public} after the page went public, the rest before")
        guids = {d["guid"] for d in settled.values()}

        def mismatches() -> list[str]:
            wrong = []
            for bulletin in made:
                document = api.get(f"/v1/bulletins/{bulletin['id']}").json()
                # Once public, a withdrawn page is a 410 notice; never public, it never
                # existed for readers (rendered_at: a render of it once went live).
                expected = 410 if document["rendered_at"] else 404
                if (found := public_status(bulletin["url"])) != expected:
                    wrong.append(f"{bulletin['url']}: {found}, expected {expected} ({document})")
            for feed in (
                "/feeds/all.rss",
                f"/feeds/agency/{slug}.rss",
                f"/feeds/agency/{slug}.atom",
            ):
                if still := guids & set(feed_entries(system, feed)):
                    wrong.append(f"{len(still)} withdrawn bulletins still in {feed}")
            for page in ("/", f"/{slug}/"):
                text = index_page(system, page)
                if listed := [b["url"] for b in made if path_of(b["url"], system) in text]:
                    wrong.append(f"{len(listed)} withdrawn bulletins still on {page}: {listed[:3]}")
            return wrong

        until_consistent(mismatches)


@dataclass
class Embargo:
    """One round of the re-embargo race: a submission, then a PUT moving it into the future."""

    bulletin_id: int
    url: str
    slug: str
    first_title: str
    later_title: str
    answer: httpx.Response

    @property
    def accepted(self) -> bool:
        return self.answer.status_code == 202


def test_a_re_embargo_racing_the_first_render_never_leaves_a_public_page_scheduled(
    system: System,
) -> None:
    agencies = [new_agency(system, f"Sở Tài chính {n}") for n in range(5)]
    per_agency = 30  # an agency page lists 30, a feed 50: all of an agency's bulletins fit

    def client(slug: str, key: str, seed: int) -> list[Embargo]:
        staircase = Staircase(seed)
        done = []
        with system.api(key) as api:
            for _ in range(per_agency):
                first, hidden = f"Công bố {token()}", f"Hoãn {token()}"
                created = api.post("/v1/bulletins", json={"title": first, "body": "Ngay."})
                assert created.status_code == 202, created.text
                time.sleep(staircase.delay())
                bulletin = created.json()
                answer = api.put(
                    f"/v1/bulletins/{bulletin['id']}",
                    json={"title": hidden, "body": "Sau.", "published_at": later()},
                )
                # Accepted: it came before the first render; refused: after.
                staircase.came(early=answer.status_code == 202)
                done.append(Embargo(bulletin["id"], bulletin["url"], slug, first, hidden, answer))
        return done

    tasks = [partial(client, slug, key, n) for n, (slug, key) in enumerate(agencies)]
    rounds = [r for part in in_parallel(tasks, len(agencies)) for r in part]
    answers = [r.answer for r in rounds]
    print(f"{len(rounds)} re-embargoes racing the first render: {dict(summary(answers))}")
    # Either refused because the page was already public, or accepted (and then hidden).
    assert set(summary(answers)) <= {202, 422}, summary(answers)
    for r in rounds:
        if r.accepted:
            assert r.answer.json()["status"] == "scheduled", r.answer.text
        else:
            assert fields_of(r.answer.json()) == {"published_at"}, r.answer.text

    guids: dict[int, str] = {}
    for slug, key in agencies:
        mine = [r for r in rounds if r.slug == slug]
        with system.api(key) as api:
            settled = wait_settled(api, [r.bulletin_id for r in mine])
        for r in mine:
            document = settled[r.bulletin_id]
            expected = ("scheduled", r.later_title) if r.accepted else ("published", r.first_title)
            assert (document["status"], document["title"]) == expected, document
            guids[r.bulletin_id] = document["guid"]

    def mismatches() -> list[str]:
        feeds = {slug: feed_entries(system, f"/feeds/agency/{slug}.rss") for slug, _k in agencies}
        everywhere = feed_entries(system, "/feeds/all.rss")
        pages = {slug: index_page(system, f"/{slug}/") for slug, _k in agencies}
        wrong = []
        for r in rounds:
            guid, found = guids[r.bulletin_id], public_status(r.url)
            listed = path_of(r.url, system) in pages[r.slug]
            in_feed = feeds[r.slug].get(guid)
            if r.accepted and (found != 404 or in_feed or guid in everywhere or listed):
                wrong.append(
                    f"scheduled {r.url} is public: page {found}, on its agency page {listed}, "
                    f"feed entry {in_feed!r}, in all.rss {guid in everywhere}"
                )
            elif not r.accepted and (found != 200 or in_feed != r.first_title or not listed):
                wrong.append(
                    f"published {r.url}: page {found}, feed entry {in_feed!r} (expected "
                    f"{r.first_title!r}), on its agency page {listed}"
                )
        return wrong

    until_consistent(mismatches)


# Defect 3: simultaneous corrections; ETag and If-Match ------------------------------------


def published_bulletins(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    """`count` bulletins, each published (so corrections race on a public page)."""
    made = []
    for i in range(count):
        answer = api.post("/v1/bulletins", json={"title": f"Gốc {i} {token()}", "body": "Đầu."})
        assert answer.status_code == 202, answer.text
        made.append(answer.json())
    settled = wait_settled(api, [b["id"] for b in made])
    assert {d["status"] for d in settled.values()} == {"published"}
    return made


def correction(
    api: httpx.Client, bulletin: dict[str, Any], title: str, headers: dict[str, str] | None = None
) -> tuple[str, httpx.Response]:
    """One PUT. The racing threads share one client: a new one costs tens of ms (TLS setup),
    which would spread out requests meant to arrive together."""
    path = f"/v1/bulletins/{bulletin['id']}"
    content = {"title": title, "body": f"Nội dung {title}."}
    return title, send(api, "PUT", path, json=content, headers=headers)


def test_simultaneous_corrections_both_count_and_the_higher_revision_wins(system: System) -> None:
    # 60 pairs, 30 per agency: an agency feed (50 items) then holds every one of them.
    for _ in range(2):
        slug, key = new_agency(system, "Sở Tư pháp")
        with system.api(key) as api:
            check_simultaneous_corrections(system, slug, api, pairs=30)


def check_simultaneous_corrections(
    system: System, slug: str, api: httpx.Client, pairs: int
) -> None:
    made = published_bulletins(api, pairs)

    def pair(bulletin: dict[str, Any]) -> list[tuple[str, httpx.Response]]:
        titles = [f"Đính chính {letter} {token()}" for letter in "AB"]
        return race([partial(correction, api, bulletin, t) for t in titles])

    answered = in_parallel([partial(pair, b) for b in made], workers=3)
    every = [answer for answers in answered for _t, answer in answers]
    assert summary(every) == {202: 2 * pairs}, summary(every)
    revisions = [
        sorted(answer.json()["revision"] for _t, answer in answers) for answers in answered
    ]
    lost = sum(first == second for first, second in revisions)
    # Equal revisions: one correction was lost, or one answered with the other's revision.
    assert lost == 0, f"{lost} of {pairs} pairs were both answered the same revision: {revisions}"
    assert all(pair_revisions == [2, 3] for pair_revisions in revisions), revisions
    # (winner, loser) by the revision each was answered.
    outcome = {
        bulletin["id"]: tuple(
            t for t, _a in sorted(answers, key=lambda ta: -ta[1].json()["revision"])
        )
        for bulletin, answers in zip(made, answered, strict=True)
    }

    settled = wait_settled(api, outcome)
    assert {i: (d["title"], d["revision"]) for i, d in settled.items()} == {
        i: (winner, 3) for i, (winner, _loser) in outcome.items()
    }

    def mismatches() -> list[str]:
        feed = feed_entries(system, f"/feeds/agency/{slug}.rss")
        wrong = []
        for bulletin in made:
            winner, loser = outcome[bulletin["id"]]
            page = reader().get(bulletin["url"])
            if page.status_code != 200 or winner not in page.text or loser in page.text:
                wrong.append(f"{bulletin['url']} ({page.status_code}) does not show {winner!r}")
            if (entry := feed.get(settled[bulletin["id"]]["guid"])) != winner:
                wrong.append(f"the feed shows {entry!r} for {bulletin['id']}, not {winner!r}")
        return wrong

    until_consistent(mismatches)


def test_corrections_racing_with_one_if_match_let_exactly_one_through(system: System) -> None:
    _slug, key = new_agency(system, "Sở Ngoại vụ")
    with system.api(key) as api:
        check_one_if_match_each(api)


def check_one_if_match_each(api: httpx.Client) -> None:
    made = published_bulletins(api, 20)

    def pair(bulletin: dict[str, Any]) -> list[tuple[str, httpx.Response]]:
        current = api.get(f"/v1/bulletins/{bulletin['id']}")
        assert "etag" in current.headers, f"GET gives no ETag: {dict(current.headers)}"
        guard = {"If-Match": current.headers["etag"]}
        titles = [f"Sửa {letter} {token()}" for letter in "AB"]
        return race([partial(correction, api, bulletin, t, guard) for t in titles])

    answered = in_parallel([partial(pair, b) for b in made], workers=2)
    winners = {}
    for bulletin, answers in zip(made, answered, strict=True):
        assert sorted(a.status_code for _t, a in answers) == [202, 412], [
            a.text for _t, a in answers
        ]
        refused = next(a for _t, a in answers if a.status_code == 412)
        assert refused.headers["content-type"] == "application/problem+json"
        winners[bulletin["id"]] = next(t for t, a in answers if a.status_code == 202)
    settled = wait_settled(api, winners)
    assert {i: (d["title"], d["revision"]) for i, d in settled.items()} == {
        i: (title, 2) for i, title in winners.items()
    }


# Defect 5: ids beyond what the column (or 64 bits) holds ----------------------------------


def test_ids_beyond_the_column_are_not_found(system: System) -> None:
    _slug, key = new_agency(system)
    wrong = []
    with system.api(key) as api:
        for bulletin_id in (2**31, *BEYOND_64_BITS):  # 2**31: past PostgreSQL's INTEGER
            for method in ("GET", "PUT", "DELETE"):
                body = {"title": "Sửa", "body": "B"} if method == "PUT" else None
                answer = send(api, method, f"/v1/bulletins/{bulletin_id}", json=body)
                problem = answer.headers.get("content-type") == "application/problem+json"
                if answer.status_code != 404 or not problem:
                    wrong.append(f"{method} {bulletin_id}: {answer.status_code} {answer.text}")
    assert not wrong, wrong


# Defect 9: no public URL from the client's Host header ------------------------------------


def test_public_urls_never_come_from_the_host_header(system: System) -> None:
    slug, key = new_agency(system, "Sở Khoa học")
    hostile = {
        "Host": EVIL,
        "X-Forwarded-Host": EVIL,
        "X-Forwarded-Proto": "https",
        "Forwarded": f"host={EVIL};proto=https",
    }
    with system.api(key) as api:
        created = api.post("/v1/bulletins", json={"title": "Địa chỉ", "body": "B"}, headers=hostile)
        assert created.status_code == 202, created.text
        path = f"/v1/bulletins/{created.json()['id']}"
        # BANTIN_INGEST_PUBLIC_URL is unset: the ingest service's own address.
        status_url = system.ingest_url + path
        assert created.json()["status_url"] == created.headers["location"] == status_url
        batch = {"bulletins": [{"title": "Lô", "body": "B"}]}
        answers = [
            created,
            send(api, "GET", path, headers=hostile),
            send(api, "PUT", path, json={"title": "Địa chỉ mới", "body": "C"}, headers=hostile),
            send(api, "POST", "/v1/bulletins:batch", json=batch, headers=hostile),
            send(api, "DELETE", path, headers=hostile),
            send(api, "GET", path + "/", headers=hostile),  # a redirect must stay on our host
            send(api, "GET", "/docs/", headers=hostile),
        ]
    answers.append(reader().get(f"{system.gateway_url}/{slug}", headers=hostile))
    for answer in answers:
        assert answer.status_code < 500, answer.text
        assert EVIL not in answer.text, answer.text
        assert all(EVIL not in value for value in answer.headers.values()), answer.headers
    for answer in (answers[2], answers[4]):  # the PUT and the DELETE
        assert answer.json()["status_url"] == answer.headers["location"] == status_url
    item = answers[3].json()["results"][0]["bulletin"]
    assert item["status_url"].startswith(system.ingest_url + "/v1/bulletins/")
