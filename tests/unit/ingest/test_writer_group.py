"""The group-commit writer answers each submission as if it had been written alone, however
the submissions fall into batches: new rows, replays of a key and conflicts on a key."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from sqlalchemy import func, select

from services.ingest.app import create_app
from services.ingest.problems import Problem
from services.ingest.schemas import BulletinCreate
from services.ingest.writer import Accepted
from shared.db import session_scope
from shared.models import Bulletin
from shared.settings import Settings
from tests.unit.ingest.helpers import new_agency


def _outcome(future: Future[Accepted]) -> Accepted | Problem:
    try:
        return future.result(timeout=30)
    except Problem as problem:
        return problem


def test_keys_within_and_across_batches(settings: Settings) -> None:
    agency_id, _key = new_agency(settings, "so-nhom")
    other_id, _other = new_agency(settings, "so-khac")
    writer = create_app(settings).state.writer
    try:
        first = BulletinCreate(title="Bản tin một", body="Một")
        second = BulletinCreate(title="Bản tin hai", body="Hai")
        earlier = _outcome(writer.submit(agency_id, first, "<p>Một</p>", "k-earlier"))
        assert isinstance(earlier, Accepted) and earlier.created
        # Submitted back to back: most fall into one batch, whichever way they fall.
        futures = [
            writer.submit(agency_id, first, "<p>Một</p>", "k-earlier"),  # replay
            writer.submit(agency_id, second, "<p>Hai</p>", "k-earlier"),  # conflict
            writer.submit(agency_id, second, "<p>Hai</p>", "k-new"),  # new
            writer.submit(agency_id, second, "<p>Hai</p>", "k-new"),  # replay of the above
            writer.submit(agency_id, first, "<p>Một</p>", "k-new"),  # conflict with it
            writer.submit(other_id, first, "<p>Một</p>", "k-new"),  # another agency: new
            writer.submit(agency_id, first, "<p>Một</p>", None),  # no key: new
        ]
        replay, conflict, new, again, clash, other, keyless = map(_outcome, futures)
    finally:
        writer.close()

    assert isinstance(replay, Accepted) and not replay.created and replay.id == earlier.id
    assert isinstance(conflict, Problem) and conflict.status == 409
    assert isinstance(new, Accepted) and new.created and new.status == "queued"
    assert new.revision == 1 and new.slug == "ban-tin-hai"
    assert isinstance(again, Accepted) and not again.created and again.id == new.id
    assert isinstance(clash, Problem) and clash.status == 409
    assert isinstance(other, Accepted) and other.created and other.id != new.id
    assert isinstance(keyless, Accepted) and keyless.created
    with session_scope(settings) as session:
        assert session.scalar(select(func.count()).select_from(Bulletin)) == 4
        row = session.get(Bulletin, new.id)
        assert row is not None and row.guid.startswith("urn:uuid:")
        assert row.pending_since is not None and row.category_slug is None


@pytest.mark.parametrize("count", [1, 150])
def test_every_submission_gets_its_own_row(settings: Settings, count: int) -> None:
    agency_id, _key = new_agency(settings, f"so-{count}")
    writer = create_app(settings).state.writer
    try:
        items = [BulletinCreate(title=f"Tin {i}", body="B", category="Mưa") for i in range(count)]
        futures = [writer.submit(agency_id, b, "<p>B</p>", f"k{i}") for i, b in enumerate(items)]
        answers = [_outcome(f) for f in futures]
    finally:
        writer.close()
    ids = [a.id for a in answers if isinstance(a, Accepted) and a.created]
    assert len(set(ids)) == count
    with session_scope(settings) as session:
        stored = session.execute(select(Bulletin.id, Bulletin.idempotency_key)).all()
    assert {(i, f"k{n}") for n, i in enumerate(ids)} == set(stored)
