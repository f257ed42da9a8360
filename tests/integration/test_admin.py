"""Agency administration across a scaled-out ingest: two real ingest processes on one database
and one real Redis (a `bantin up` plus a second uvicorn, as in test_tenancy.py). A disable,
an enable or a rotation made through the CLI or the admin API on one process reaches both
within a second; racing changes from several clients leave a consistent state.

The measured delays are printed (run with -s), never asserted: the tests give up at a
generous deadline, not at the promise.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from shared.agencies import create_agency, list_keys, rotate_key, set_disabled
from shared.db import create_schema, engine_for, session_scope
from shared.models import Agency, Bulletin
from shared.settings import Settings
from shared.testing import System, start_system, stop_system
from tests.integration.servers import INGEST, start_server

TOKEN = "operator-token-of-the-integration-tests-0123"
GIVE_UP_SECONDS = 5.0  # the promise is one second; this is only where a test stops waiting
BULLETIN = {"title": "Thông báo", "body": "Nội dung thông báo."}


@dataclass
class Deployment:
    system: System
    urls: tuple[str, str]  # the two ingest processes

    def operator(self, index: int) -> httpx.Client:
        return httpx.Client(
            base_url=self.urls[index], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("admin")
    system = start_system(data_dir, extra_env={"BANTIN_OPERATOR_TOKEN": TOKEN})
    try:
        second, url = start_server(INGEST, system.env, data_dir / "ingest-2.log")
    except BaseException:
        stop_system(system)
        raise
    yield Deployment(system, (system.ingest_url, url))
    second.terminate()
    second.wait(10)
    stop_system(system)


def agency_client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def wall(moment: str) -> float:
    return datetime.fromisoformat(moment).timestamp()


class Watch:
    """Polls GET /v1/keys on every process from before a change until each answers
    `expected`, noting the wall-clock time it first did (so a slow CLI start-up or exit is not
    counted). Before that, one other answer (the previous state's) is the only acceptable one."""

    def __init__(self, urls: tuple[str, ...], key: str, expected: int) -> None:
        self.clients = [agency_client(url, key) for url in urls]
        self.expected = expected
        self.seen: list[float | None] = [None] * len(urls)
        self.before: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll)
        self.thread.start()

    def _poll(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the change never comes
        while None in self.seen and not self.stop.is_set() and time.monotonic() < deadline:
            for index, http in enumerate(self.clients):
                if self.seen[index] is None:
                    status = http.get("/v1/keys").status_code
                    if status == self.expected:
                        self.seen[index] = time.time()
                    else:
                        self.before.add(status)
            time.sleep(0.01)

    def delays(self, since: float) -> list[float]:
        """Each process's delay from `since` (a wall-clock time), once all have answered
        `expected` or GIVE_UP_SECONDS after `since` have passed."""
        while None in self.seen and time.time() < since + GIVE_UP_SECONDS:
            time.sleep(0.01)
        self.stop.set()
        self.thread.join(30)
        assert len(self.before) <= 1, f"answers before {self.expected}: {self.before}"
        delays = [None if seen is None else seen - since for seen in self.seen]
        assert all(d is not None and d < GIVE_UP_SECONDS for d in delays), delays
        return [d for d in delays if d is not None]


def wait_everywhere(urls: tuple[str, ...], key: str, expected: int, since: float) -> list[float]:
    return Watch(urls, key, expected).delays(since)


def when_committed(check: Callable[[], bool]) -> float:
    """The wall-clock time `check()` first held, polled every 10 ms from before the change:
    when it committed, for changes that record no time (an enable)."""
    deadline = time.monotonic() + 120
    while not check():
        assert time.monotonic() < deadline, "the change never committed"
        time.sleep(0.01)
    return time.time()


def disabled_at(deployment: Deployment, slug: str) -> float:
    with session_scope(deployment.system.settings()) as session:
        moment = session.scalar(select(Agency.disabled_at).where(Agency.slug == slug))
    assert moment is not None
    return moment.timestamp()


def warm(urls: tuple[str, ...], key: str) -> None:
    """Both processes have the key in their cache: the delays measured are the caches'."""
    for url in urls:
        assert agency_client(url, key).get("/v1/keys").status_code == 200


def ms(delays: list[float]) -> str:
    return ", ".join(f"{d * 1000:.0f} ms" for d in delays)


def new_agency(deployment: Deployment, slug: str) -> str:
    return deployment.system.create_agency(f"Sở {slug}", slug)


# Disable and enable ------------------------------------------------------------------------


def test_a_cli_disable_reaches_both_processes_and_enable_restores(deployment: Deployment) -> None:
    key = new_agency(deployment, "so-cli")
    warm(deployment.urls, key)
    watch = Watch(deployment.urls, key, 403)
    done = deployment.system.cli("agency", "disable", "so-cli")
    assert done.returncode == 0, done.stderr
    disabled = watch.delays(disabled_at(deployment, "so-cli"))
    refused = agency_client(deployment.urls[1], key).post("/v1/bulletins", json=BULLETIN)
    assert refused.status_code == 403 and refused.json()["title"] == "Agency disabled"

    watch = Watch(deployment.urls, key, 200)
    settings = deployment.system.settings()

    def enabled_in_database() -> bool:
        with session_scope(settings) as session:
            query = select(Agency.disabled_at).where(Agency.slug == "so-cli")
            return session.scalar(query) is None

    with ThreadPoolExecutor(1) as pool:
        committed = pool.submit(when_committed, enabled_in_database)
        assert deployment.system.cli("agency", "enable", "so-cli").returncode == 0
        enabled = watch.delays(committed.result(timeout=60))
    print(f"\nCLI disable refused on both processes after {ms(disabled)} (from disabled_at)"
          f"\nCLI enable accepted on both processes after {ms(enabled)} (from the commit, "
          "seen polling the database every 10 ms)")  # fmt: skip


def test_an_api_disable_holds_at_once_here_and_within_a_second_there(
    deployment: Deployment,
) -> None:
    key = new_agency(deployment, "so-api")
    warm(deployment.urls, key)
    answer = deployment.operator(0).post("/v1/admin/agencies/so-api/disable")
    assert answer.status_code == 200 and answer.json()["status"] == "disabled"
    # The process that made the change refuses the very next request.
    assert agency_client(deployment.urls[0], key).get("/v1/keys").status_code == 403
    disabled = wait_everywhere(deployment.urls, key, 403, wall(answer.json()["disabled_at"]))

    sent = time.time()
    enabled_answer = deployment.operator(1).post("/v1/admin/agencies/so-api/enable")
    assert enabled_answer.status_code == 200 and enabled_answer.json()["status"] == "active"
    assert agency_client(deployment.urls[1], key).get("/v1/keys").status_code == 200
    enabled = wait_everywhere(deployment.urls, key, 200, sent)
    print(f"\nAPI disable (process 1) refused on processes 1, 2 after {ms(disabled)}"
          f"\nAPI enable (process 2) accepted on processes 1, 2 after {ms(enabled)}")  # fmt: skip


# Rotation ----------------------------------------------------------------------------------


def test_a_rotation_by_api_or_cli_retires_the_old_key_on_both_processes(
    deployment: Deployment,
) -> None:
    old = new_agency(deployment, "so-rot")
    warm(deployment.urls, old)
    watch = Watch(deployment.urls, old, 401)
    rotated = deployment.operator(1).post("/v1/admin/agencies/so-rot/rotate-key")
    assert rotated.status_code == 200 and len(rotated.json()["revoked"]) == 1
    assert agency_client(deployment.urls[1], old).get("/v1/keys").status_code == 401  # at once
    new = rotated.json()["key"]["key"]
    keys = agency_client(deployment.urls[0], new).get("/v1/keys").json()["keys"]
    by_api = watch.delays(wall(next(k["revoked_at"] for k in keys if k["revoked_at"])))
    warm(deployment.urls, new)

    watch = Watch(deployment.urls, new, 401)
    done = deployment.system.cli("agency", "rotate-key", "so-rot")
    assert done.returncode == 0, done.stderr
    newest = done.stdout.strip().splitlines()[-1]
    keys = agency_client(deployment.urls[0], newest).get("/v1/keys").json()["keys"]
    by_cli = watch.delays(wall(keys[1]["revoked_at"]))
    warm(deployment.urls, newest)
    print(f"\nAPI rotation: old key refused on both processes after {ms(by_api)}"
          f"\nCLI rotation: old key refused on both processes after {ms(by_cli)}")  # fmt: skip


def test_racing_rotations_and_toggles_from_several_clients_stay_consistent(
    deployment: Deployment,
) -> None:
    new_agency(deployment, "so-race")
    operators = [deployment.operator(i % 2) for i in range(6)]
    jobs = ["rotate-key"] * 24 + ["disable"] * 12 + ["enable"] * 12
    random.Random(8).shuffle(jobs)

    def call(job: tuple[int, str]) -> httpx.Response:
        index, action = job
        return operators[index % len(operators)].post(f"/v1/admin/agencies/so-race/{action}")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, enumerate(jobs)))
    assert [a.status_code for a in answers] == [200] * len(jobs), [a.text for a in answers]
    rotations = [a.json() for a, job in zip(answers, jobs, strict=True) if job == "rotate-key"]
    revoked = [key_id for r in rotations for key_id in r["revoked"]]
    minted = [r["key"]["id"] for r in rotations]
    # Every key was revoked by exactly one rotation, and exactly one key survives: the last
    # rotation's, which revoked all the others.
    assert len(revoked) == len(set(revoked))
    with session_scope(deployment.system.settings()) as session:
        agency = session.scalars(select(Agency).where(Agency.slug == "so-race")).one()
        keys = list_keys(session, agency.id)
    active = [k.id for k in keys if k.revoked_at is None]
    assert len(active) == 1 and active[0] in minted
    assert set(revoked) | set(active) == {k.id for k in keys}
    # The final state is one of the states an answer reported, and both processes agree on it.
    final = deployment.operator(0).get("/v1/admin/agencies/so-race").json()
    assert final["active_keys"] == 1
    survivor = next(r["key"]["key"] for r in rotations if r["key"]["id"] == active[0])
    expected = 200 if final["status"] == "active" else 403
    wait_everywhere(deployment.urls, survivor, expected, time.time())


# A disable racing submissions ----------------------------------------------------------------


def test_a_disable_racing_submissions_publishes_every_accepted_one_and_stores_no_refused_one(
    deployment: Deployment,
) -> None:
    key = new_agency(deployment, "so-flood")
    http = agency_client(deployment.urls[0], key)
    online = http.post("/v1/bulletins", json=BULLETIN).json()
    deployment.system.wait_published(http, online["id"])

    stop = threading.Event()
    results: list[tuple[int, int, dict[str, Any]]] = []  # (process, status, body)

    def submit(process: int) -> None:
        client = agency_client(deployment.urls[process], key)
        for _ in range(500):  # bounded in count as well as time
            if stop.is_set():
                return
            response = client.post("/v1/bulletins", json=BULLETIN)
            results.append((process, response.status_code, response.json()))

    threads = [threading.Thread(target=submit, args=(i % 2,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        answer = deployment.operator(0).post("/v1/admin/agencies/so-flood/disable")
        assert answer.status_code == 200
        wait_everywhere(deployment.urls, key, 403, wall(answer.json()["disabled_at"]))
        time.sleep(0.2)  # a few more refusals
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    statuses = [status for _, status, _ in results]
    assert set(statuses) == {202, 403}, set(statuses)
    for _, status, body in results:
        if status == 403:
            assert body["title"] == "Agency disabled"
    accepted = {body["id"] for _, status, body in results if status == 202}
    # Refused means nothing stored; accepted means published, though the agency is disabled.
    settings = deployment.system.settings()
    deadline = time.monotonic() + 60
    while True:
        with session_scope(settings) as session:
            rows = dict(
                session.execute(
                    select(Bulletin.id, Bulletin.status)
                    .join(Agency)
                    .where(Agency.slug == "so-flood", Bulletin.id != online["id"])
                ).all()
            )
        assert set(rows) == accepted
        if set(rows.values()) == {"published"}:
            break
        assert time.monotonic() < deadline, f"not all published: {rows}"
        time.sleep(0.1)
    # Its pages stay online, the one published before the disable as well.
    for url in [online["url"], *(b["url"] for _, s, b in results if s == 202)][:20]:
        assert httpx.get(url, timeout=10).status_code == 200, url
    print(f"\nDisable racing {len(results)} submissions: {len(accepted)} accepted (all "
          f"published), {statuses.count(403)} refused (none stored)")  # fmt: skip


# Guarded changes on the database, without HTTP ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path, private_redis: str) -> Settings:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_database")
    settings = Settings(data_dir=tmp_path, database_url=url, redis_url=private_redis)
    create_schema(settings)
    return settings


def test_racing_disables_enables_and_rotations_on_the_database_stay_consistent(
    database: Settings,
) -> None:
    with session_scope(database) as session:
        create_agency(session, name="Sở Đua", slug="so-dua")
    changes: list[tuple[str, bool]] = []  # (action, changed)
    rotations: list[tuple[int, list[int]]] = []  # (new key id, revoked ids)
    lock = threading.Lock()

    def worker(seed: int) -> None:
        chooser = random.Random(seed)
        for _ in range(15):
            action = chooser.choice(["disable", "enable", "rotate"])
            with session_scope(database) as session:
                if action == "rotate":
                    rotation = rotate_key(session, "so-dua")
                    outcome: Any = (rotation.key.id, rotation.revoked)
                else:
                    outcome = set_disabled(session, "so-dua", action == "disable")
            with lock:  # recorded after the commit
                if action == "rotate":
                    rotations.append(outcome)
                else:
                    changes.append((action, outcome))

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    engine_for(database).dispose()

    # Each change flips the state, so changes alternate from "active": disables made one
    # more change than enables iff the agency ends disabled.
    made = [action for action, changed in changes if changed]
    difference = made.count("disable") - made.count("enable")
    with session_scope(database) as session:
        agency = session.scalars(select(Agency).where(Agency.slug == "so-dua")).one()
        keys = list_keys(session, agency.id)
        total = session.scalar(select(func.count()).select_from(Agency))
    assert difference in (0, 1) and (agency.disabled_at is not None) == (difference == 1)
    assert total == 1
    revoked = [key_id for _, ids in rotations for key_id in ids]
    active = [k.id for k in keys if k.revoked_at is None]
    assert rotations and len(revoked) == len(set(revoked))  # no key revoked twice
    assert len(active) == 1 and active[0] in {new for new, _ in rotations}
    assert set(revoked) | set(active) == {k.id for k in keys}
    print(f"\n{database.resolved_database_url.split(':')[0]}: {len(made)} of {len(changes)} "
          f"toggles changed the state, {len(rotations)} rotations, one key left")  # fmt: skip
