"""The concurrency suite for state changes, on SQLite and PostgreSQL.

Each round submits one bulletin (now, or embargoed) and at once lets 3-4 client threads
correct it, withdraw it or move it into the future, each after a random 0-30 ms, racing each
other and the bulletin's first render. Every answer the clients get is recorded; every 202 is
an accepted change with its revision. Once the system is quiet, the row, the page at the
gateway, the feeds and the index pages must all show the accepted change with the highest
revision: its title if published, a 410 notice if withdrawn after being public, nothing at
all if scheduled or never public. Refusals must be the documented ones (409 once withdrawn,
422 for re-embargoing a public bulletin) and nothing may be a 5xx.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from shared.testing import System
from tests.integration.consistency import (
    feed_entries,
    in_parallel,
    index_page,
    new_agency,
    path_of,
    race,
    reader,
    send,
    token,
    until_consistent,
    wait_settled,
)

ROUNDS = 200  # per database
AGENCIES = 8  # 25 bulletins each: an agency page (30) and its feed (50) list all of them
IN_FLIGHT = 4  # rounds played at once, each on its own bulletin
MAX_DELAY = 0.03
# Corrections are the common case; a withdrawal ends a round's story, so it is rarer.
OPERATIONS = ("correct", "correct", "correct", "re-embargo", "re-embargo", "withdraw")
# What the bulletin must end as when this kind of change is the last one accepted.
FINAL_STATUS = {
    "create": "published",
    "create-embargoed": "scheduled",
    "correct": "published",
    "re-embargo": "scheduled",
    "withdraw": "withdrawn",
}


@dataclass(frozen=True)
class Change:
    """A change the system accepted (202), with the revision it answered."""

    revision: int
    kind: str
    title: str | None  # None: a withdrawal changes no content


@dataclass
class Round:
    bulletin_id: int
    url: str
    slug: str
    changes: list[Change] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)  # (kind, status)
    wrong: list[str] = field(default_factory=list)  # answers no client should ever get

    @property
    def last(self) -> Change:
        return max(self.changes, key=lambda change: change.revision)

    @property
    def status(self) -> str:
        return FINAL_STATUS[self.last.kind]

    @property
    def title(self) -> str:
        """The content of the newest accepted change that had content."""
        with_content = [change for change in self.changes if change.title is not None]
        title = max(with_content, key=lambda change: change.revision).title
        assert title is not None
        return title


def moment(embargoed: bool) -> str:
    """A published_at: an hour ahead (an embargo that never comes due here), or just past."""
    offset = timedelta(hours=1) if embargoed else timedelta(seconds=-1)
    return (datetime.now(UTC) + offset).isoformat()


@dataclass(frozen=True)
class Agency:
    slug: str
    api: httpx.Client  # shared by its clients' threads: a new one costs tens of ms (TLS setup)


def act(
    api: httpx.Client, bulletin_id: int, plan: list[str], seed: str
) -> list[tuple[str, str | None, httpx.Response]]:
    """One client's changes to one bulletin: (kind, title, answer) each."""
    rng = random.Random(seed)
    done: list[tuple[str, str | None, httpx.Response]] = []
    for kind in plan:
        time.sleep(rng.uniform(0, MAX_DELAY))
        path = f"/v1/bulletins/{bulletin_id}"
        if kind == "withdraw":
            done.append((kind, None, send(api, "DELETE", path)))
            continue
        title = f"{'Sửa' if kind == 'correct' else 'Hoãn'} {token()}"
        content = {
            "title": title,
            "body": f"Nội dung {title}.",
            "published_at": moment(embargoed=kind == "re-embargo"),
        }
        done.append((kind, title, send(api, "PUT", path, json=content)))
    return done


def judge(round_: Round, kind: str, title: str | None, answer: httpx.Response) -> None:
    """File one answer as an accepted change, a documented refusal, or something wrong."""
    said = f"{kind} on {round_.bulletin_id}: {answer.status_code} {answer.text[:300]}"
    if answer.status_code == 202:
        status = answer.json()["status"]
        expected = {"withdraw": {"withdrawn"}, "re-embargo": {"scheduled"}}
        if status not in expected.get(kind, {"queued", "published"}):
            round_.wrong.append(f"answered status {status!r}: {said}")
        round_.changes.append(Change(answer.json()["revision"], kind, title))
    elif answer.status_code == 409 and kind != "withdraw":
        round_.refused.append((kind, 409))  # already withdrawn; checked below
    elif answer.status_code == 422 and kind == "re-embargo":
        problem = answer.json()
        if {error["field"] for error in problem.get("errors", [])} != {"published_at"}:
            round_.wrong.append(f"422 without naming published_at: {said}")
        round_.refused.append((kind, 422))
    else:
        round_.wrong.append(said)


def play(agency: Agency, seed: int) -> Round:
    rng = random.Random(seed)
    embargoed = rng.random() < 0.25
    title = f"Tạo {token()}"
    content = {"title": title, "body": f"Nội dung {title}.", "published_at": moment(embargoed)}
    created = agency.api.post("/v1/bulletins", json=content)
    assert created.status_code == 202, created.text
    bulletin = created.json()
    round_ = Round(bulletin["id"], bulletin["url"], agency.slug)
    round_.changes.append(Change(1, "create-embargoed" if embargoed else "create", title))
    plans = [
        [rng.choice(OPERATIONS) for _ in range(rng.randint(1, 2))] for _ in range(rng.randint(3, 4))
    ]
    clients = [
        partial(act, agency.api, bulletin["id"], plan, f"{seed}-{n}")
        for n, plan in enumerate(plans)
    ]
    for answers in race(clients):
        for kind, change_title, answer in answers:
            judge(round_, kind, change_title, answer)
    check_answers(round_)
    return round_


def check_answers(round_: Round) -> None:
    """Accepted changes have distinct revisions (a repeated withdrawal answers the one it
    already made), and a 409 only follows an accepted withdrawal."""
    by_revision: dict[int, set[tuple[str, str | None]]] = {}
    for change in round_.changes:
        by_revision.setdefault(change.revision, set()).add((change.kind, change.title))
    for revision, changes in by_revision.items():
        if len(changes) > 1:
            round_.wrong.append(
                f"revision {revision} answered to {len(changes)} changes: {changes}"
            )
    withdrawn = any(change.kind == "withdraw" for change in round_.changes)
    if any(status == 409 for _kind, status in round_.refused) and not withdrawn:
        round_.wrong.append(f"409 on {round_.bulletin_id}, which no accepted change withdrew")


def row_mismatches(rounds: list[Round], settled: dict[int, dict[str, Any]]) -> list[str]:
    wrong = []
    for r in rounds:
        document = settled[r.bulletin_id]
        found = (document["status"], document["revision"], document["title"])
        expected = (r.status, r.last.revision, r.title)
        if found != expected:
            wrong.append(
                f"row {r.bulletin_id} is {found}, the last accepted change says "
                f"{expected} ({sorted(r.changes, key=lambda c: c.revision)})"
            )
    return wrong


def public_mismatches(system: System, rounds: list[Round], agencies: list[Agency]) -> list[str]:
    """What the gateway serves against the last accepted change of every round."""
    wrong = []
    apis = {agency.slug: agency.api for agency in agencies}
    documents = {
        r.bulletin_id: apis[r.slug].get(f"/v1/bulletins/{r.bulletin_id}").json() for r in rounds
    }
    feeds = {slug: feed_entries(system, f"/feeds/agency/{slug}.rss") for slug in apis}
    everywhere = feed_entries(system, "/feeds/all.rss")
    pages = {slug: index_page(system, f"/{slug}/") for slug in apis}
    for r in rounds:
        document, published = documents[r.bulletin_id], r.status == "published"
        guid, page = document["guid"], reader().get(r.url)
        if published:
            if page.status_code != 200 or r.title not in page.text:
                wrong.append(f"{r.url}: {page.status_code}, expected 200 showing {r.title!r}")
        else:
            # Withdrawn after it was public: a 410 notice. Scheduled, or never public: nothing.
            expected = 410 if r.status == "withdrawn" and document["rendered_at"] else 404
            if page.status_code != expected:
                wrong.append(
                    f"{r.url}: {page.status_code}, expected {expected} ({r.status}, "
                    f"rendered_at {document['rendered_at']})"
                )
        in_feed, in_all = feeds[r.slug].get(guid), everywhere.get(guid)
        if in_feed != (r.title if published else None):
            wrong.append(
                f"agency feed has {in_feed!r} for {r.bulletin_id} ({r.status} {r.title!r})"
            )
        if in_all is not None and (not published or in_all != r.title):
            wrong.append(f"all.rss has {in_all!r} for {r.bulletin_id} ({r.status} {r.title!r})")
        if (path_of(r.url, system) in pages[r.slug]) != published:
            wrong.append(
                f"the agency page {'lacks' if published else 'lists'} {r.url} ({r.status})"
            )
    return wrong


def test_interleaved_changes_end_as_the_last_accepted_one(system: System) -> None:
    with ExitStack() as stack:
        agencies = [
            Agency(slug, stack.enter_context(system.api(key)))
            for slug, key in (new_agency(system, f"Ủy ban nhân dân {n}") for n in range(AGENCIES))
        ]
        check_rounds(system, agencies)


def check_rounds(system: System, agencies: list[Agency]) -> None:
    plays = [partial(play, agencies[i % AGENCIES], i) for i in range(ROUNDS)]
    rounds = in_parallel(plays, workers=IN_FLIGHT)

    accepted = Counter(change.kind for r in rounds for change in r.changes)
    refused = Counter(f"{kind} {status}" for r in rounds for kind, status in r.refused)
    finals = Counter(r.status for r in rounds)
    print(
        f"{ROUNDS} rounds: accepted {dict(accepted)}, refused {dict(refused)}, final {dict(finals)}"
    )
    wrong_answers = [line for r in rounds for line in r.wrong]
    assert not wrong_answers, f"{len(wrong_answers)} wrong answers:\n" + "\n".join(
        wrong_answers[:25]
    )

    settled: dict[int, dict[str, Any]] = {}
    for agency in agencies:
        mine = [r.bulletin_id for r in rounds if r.slug == agency.slug]
        settled |= wait_settled(agency.api, mine)
    rows = row_mismatches(rounds, settled)
    assert not rows, f"{len(rows)} rows differ from the last accepted change:\n" + "\n".join(
        rows[:25]
    )
    until_consistent(partial(public_mismatches, system, rounds, agencies))
