"""The render step stores each revision's citations with its page and asks for the pages and
feeds of every document the bulletin cites or cited (services/render/jobs.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from services.reconciler.loop import verify_listings
from services.render.jobs import build_documents_index, publish_bulletin, render_listing
from services.render.pages import PageRenderer
from shared.celery_app import create_celery_app
from shared.db import create_schema, engine_for, session_scope
from shared.listings import newest_bulletins
from shared.models import Agency, Bulletin, BulletinStatus, Citation, LegalDocument
from shared.refresh import TARGETS_KEY, Job
from shared.runtime import Runtime, build_runtime
from shared.settings import Settings
from shared.site import DOCUMENTS, document

Q628 = "qd-ttg-628-2020"
KL51 = "kl-tw-51"  # no date, no year in its number: a key without a year
BOTH = "<p>Thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020 và Kết luận số 51-KL/TW.</p>"
ONLY_628 = "<p>Thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020.</p>"


@pytest.fixture
def runtime(private_redis: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    create_schema(settings)
    Redis.from_url(private_redis).flushdb()
    runtime = build_runtime(settings, create_celery_app(settings))
    yield runtime
    runtime.redis.close()


def add(runtime: Runtime, body_html: str) -> int:
    with session_scope(runtime.settings) as session:
        agency = session.scalar(select(Agency).where(Agency.slug == "so-y-te"))
        if agency is None:
            agency = Agency(slug="so-y-te", name="Sở Y tế")
            session.add(agency)
            session.flush()
        bulletin = Bulletin(
            agency_id=agency.id, slug="thong-bao", title="Thông báo", body_format="html",
            body_source=body_html, body_html=body_html, status=BulletinStatus.QUEUED,
            published_at=datetime(2024, 5, 2, 8, tzinfo=UTC),
        )  # fmt: skip
        session.add(bulletin)
        session.flush()
        return bulletin.id


def change(runtime: Runtime, bulletin_id: int, **values: Any) -> int:
    """A correction or withdrawal as ingest stores it: a new revision owing a render."""
    with session_scope(runtime.settings) as session:
        bulletin = session.get_one(Bulletin, bulletin_id)
        bulletin.revision += 1
        bulletin.attempts = 0
        for name, value in values.items():
            setattr(bulletin, name, value)
        return bulletin.revision


def rows(runtime: Runtime, bulletin_id: int) -> list[tuple[int, str, int]]:
    with Session(engine_for(runtime.settings)) as session:
        query = select(Citation.revision, Citation.document_key, Citation.position).where(
            Citation.bulletin_id == bulletin_id
        )
        return sorted((r, k, p) for r, k, p in session.execute(query))


def requested(runtime: Runtime) -> set[str]:
    """Every build asked for since the last call (job|target)."""
    found = {m.decode() if isinstance(m, bytes) else m for m in runtime.redis.smembers(TARGETS_KEY)}
    runtime.redis.delete(TARGETS_KEY)
    return found


def listed(runtime: Runtime, key: str) -> list[int]:
    with Session(engine_for(runtime.settings)) as session:
        return [b.id for b in newest_bulletins(session, document(key), 10)]


def test_citations_follow_each_revision_and_its_documents_are_rebuilt(runtime: Runtime) -> None:
    renderer = PageRenderer(runtime.settings)
    bulletin_id = add(runtime, BOTH)
    assert publish_bulletin(runtime, renderer, bulletin_id, 1)
    assert rows(runtime, bulletin_id) == [(1, KL51, 1), (1, Q628, 0)]  # order of mention
    with Session(engine_for(runtime.settings)) as session:
        assert session.get_one(LegalDocument, Q628).name == "Quyết định số 628/QĐ-TTg"
    wanted = requested(runtime)
    for key in (Q628, KL51):
        assert {f"page|document:{key}", f"feed|document:{key}"} <= wanted
        assert f"feed|archive:document:{key}@2024-05" in wanted
    assert "page|documents" in wanted
    page = runtime.storage.get(f"so-y-te/thong-bao-{bulletin_id}.html")
    assert page is not None and f'href="/van-ban/{Q628}/"'.encode() in page
    assert listed(runtime, Q628) == listed(runtime, KL51) == [bulletin_id]

    # A correction dropping the conclusion: its own rows, and the conclusion's page and feeds
    # rebuilt too (the bulletin leaves them).
    revision = change(runtime, bulletin_id, body_html=ONLY_628)
    assert listed(runtime, KL51) == [bulletin_id]  # until the new revision's page is live
    assert publish_bulletin(runtime, renderer, bulletin_id, revision)
    assert rows(runtime, bulletin_id) == [(1, KL51, 1), (1, Q628, 0), (2, Q628, 0)]
    assert {f"page|document:{KL51}", f"feed|document:{KL51}"} <= requested(runtime)
    assert (listed(runtime, Q628), listed(runtime, KL51)) == ([bulletin_id], [])

    # A repair renders the same revision again (services/reconciler/loop.py _render_again).
    with session_scope(runtime.settings) as session:
        session.execute(update(Bulletin).values(rendered_revision=revision - 1))
    assert publish_bulletin(runtime, renderer, bulletin_id, revision)
    assert rows(runtime, bulletin_id) == [(1, KL51, 1), (1, Q628, 0), (2, Q628, 0)]

    # A withdrawal writes no rows, and rebuilds every document it ever cited.
    revision = change(runtime, bulletin_id, status=BulletinStatus.WITHDRAWN)
    requested(runtime)
    assert publish_bulletin(runtime, renderer, bulletin_id, revision)
    assert all(r < revision for r, _, _ in rows(runtime, bulletin_id))
    wanted = requested(runtime)
    assert {f"page|document:{Q628}", f"page|document:{KL51}", "page|documents"} <= wanted
    assert listed(runtime, Q628) == []


def test_a_first_revision_citing_nothing_costs_no_citation_query(runtime: Runtime) -> None:
    bulletin_id = add(runtime, "<p>Không nhắc văn bản nào; số 5 trong câu.</p>")
    statements: list[str] = []
    engine = engine_for(runtime.settings)

    def capture(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert publish_bulletin(runtime, PageRenderer(runtime.settings), bulletin_id, 1)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert not [s for s in statements if "citations" in s or "documents" in s], statements
    assert not [m for m in requested(runtime) if m.startswith("page|document")]


def test_a_repair_drops_first_revision_citations_its_text_no_longer_gives(
    runtime: Runtime,
) -> None:
    """Rows an older extraction stored for a first revision (made here by hand) that the
    current one does not find: a repair's re-render replaces them, and rebuilds the document
    the bulletin leaves; meanwhile (render owed) the document still lists it, as its page."""
    renderer = PageRenderer(runtime.settings)
    bulletin_id = add(runtime, "<p>Không nhắc văn bản nào.</p>")
    assert publish_bulletin(runtime, renderer, bulletin_id, 1)
    with session_scope(runtime.settings) as session:
        name = "Kết luận số 51-KL/TW"
        session.add(LegalDocument(key=KL51, doc_type="Kết luận", number="51", year=None,
                                  issuer="KL/TW", name=name, issued_on=None))  # fmt: skip
        session.flush()
        session.add(Citation(bulletin_id=bulletin_id, revision=1, document_key=KL51, position=0,
                             published_at=datetime(2024, 5, 2, 8, tzinfo=UTC)))  # fmt: skip
    assert listed(runtime, KL51) == [bulletin_id]
    requested(runtime)

    # The reconciler owes the page a render again (services/reconciler/loop.py _render_again).
    with session_scope(runtime.settings) as session:
        session.execute(update(Bulletin).values(rendered_revision=0))
    assert listed(runtime, KL51) == [bulletin_id]  # still live: the page is what it was
    assert publish_bulletin(runtime, renderer, bulletin_id, 1)
    assert rows(runtime, bulletin_id) == []
    assert listed(runtime, KL51) == []
    assert {f"page|document:{KL51}", f"feed|document:{KL51}"} <= requested(runtime)


def test_van_ban_is_built_once_by_the_reconciler_then_with_each_document_page(
    runtime: Runtime,
) -> None:
    """/van-ban/ aggregates every citation: the reconciler asks for it only while it was never
    built (a new site, a Redis that lost its state); afterwards each document page's build
    brings it along, the reconciler's own repairs of document pages included."""
    renderer = PageRenderer(runtime.settings)
    requested(runtime)
    verify_listings(runtime)
    assert "page|documents" in requested(runtime)
    runtime.refresher.run(
        Job.PAGE, DOCUMENTS, lambda: build_documents_index(runtime, renderer, DOCUMENTS)
    )
    requested(runtime)
    verify_listings(runtime)
    assert "page|documents" not in requested(runtime)
    render_listing(runtime, renderer, document(Q628))
    assert "page|documents" in requested(runtime)
