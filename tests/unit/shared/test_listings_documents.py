"""A legal document's listing: the bulletins whose *live* revision cites it, newest first,
read through the citations' own index (SPEC, "the data rule")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Select, insert
from sqlalchemy.orm import Session

from shared.db import create_schema, engine_for, session_scope
from shared.listings import (
    _edge,
    _id,
    _newest,
    _published,
    _time,
    all_listings,
    documents_cited_by,
    listing_heading,
    month_count,
    month_keys,
    month_summary,
    month_versions,
    most_cited,
    neighbours,
    newest_bulletins,
    newest_month,
    newest_versions,
)
from shared.models import Agency, Bulletin, BulletinStatus, Citation, LegalDocument
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind, document
from tests.conftest import fresh_postgresql

D1, D2, D3 = "qd-ttg-628-2020", "kl-tw-51-2019", "nq-cp-44-2014"
JAN, FEB, MAR = (datetime(2024, m, d, 8, tzinfo=UTC) for m, d in ((1, 10), (2, 5), (3, 1)))


def _seed(settings: Settings) -> dict[str, int]:
    """b1 Jan cites D1; b2 Feb: revision 1 cited D1, its live revision 2 cites D2 only;
    b3 Feb 20: live revision 1 cites D1, revision 2 (corrected, not yet rendered) would cite
    D2; b4 withdrawn, its revision 1 cited D1 and D3; b6 and b7 Mar 1 at the same moment,
    both cite D1, b6 also D2."""
    create_schema(settings)
    ids: dict[str, int] = {}
    with session_scope(settings) as session:
        a, b = Agency(slug="so-y-te", name="Sở Y tế"), Agency(slug="so-gd", name="Sở GD")
        session.add_all([a, b])
        for key, name, day in (
            (D1, "Quyết định số 628/QĐ-TTg", date(2020, 5, 11)),
            (D2, "Kết luận số 51-KL/TW", None),
            (D3, "Nghị quyết số 44/NQ-CP", date(2014, 6, 9)),
        ):
            kind, number = name.split(" số ")[0], name.split(" số ")[1].split("/")[0]
            session.add(LegalDocument(key=key, doc_type=kind, number=number, year=None,
                                      issuer="X", name=name, issued_on=day))  # fmt: skip
        session.flush()
        rows = [
            ("b1", a, JAN, 1, 1, BulletinStatus.PUBLISHED),
            ("b2", b, FEB, 2, 2, BulletinStatus.PUBLISHED),
            ("b3", a, FEB + timedelta(days=15), 2, 1, BulletinStatus.PUBLISHED),
            ("b4", b, FEB, 2, 2, BulletinStatus.WITHDRAWN),
            ("b5", a, MAR, 1, 0, BulletinStatus.QUEUED),
            ("b6", a, MAR, 1, 1, BulletinStatus.PUBLISHED),
            ("b7", b, MAR, 1, 1, BulletinStatus.PUBLISHED),
        ]
        for name, agency, moment, revision, rendered, status in rows:
            bulletin = Bulletin(
                agency_id=agency.id, slug=name, title=name, body_format="text",
                body_source="b", body_html="<p>b</p>", published_at=moment, status=status,
                revision=revision, rendered_revision=rendered,
                cited_revision=rendered or None,
            )  # fmt: skip
            session.add(bulletin)
            session.flush()
            ids[name] = bulletin.id
        cites = [
            ("b1", 1, D1, JAN),
            ("b2", 1, D1, FEB),
            ("b2", 2, D2, FEB),
            ("b3", 1, D1, FEB + timedelta(days=15)),
            ("b3", 2, D2, FEB + timedelta(days=15)),
            ("b4", 1, D1, FEB),
            ("b4", 1, D3, FEB),
            ("b6", 1, D1, MAR),
            ("b6", 1, D2, MAR),
            ("b7", 1, D1, MAR),
        ]
        for position, (name, revision, key, moment) in enumerate(cites):
            session.add(Citation(bulletin_id=ids[name], revision=revision, document_key=key,
                                 position=position, published_at=moment))  # fmt: skip
    return ids


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[Settings, dict[str, int]]]:
    settings = Settings(data_dir=tmp_path)
    yield settings, _seed(settings)


def _names(bulletins: list[Bulletin]) -> list[str]:
    return [b.slug for b in bulletins]


def test_a_documents_listing_is_its_live_citers_newest_first(
    seeded: tuple[Settings, dict[str, int]],
) -> None:
    settings, ids = seeded
    with Session(engine_for(settings)) as session:
        # b7 and b6 share their time: the later id first. b2 no longer cites D1 (its live
        # revision dropped it), b3's live revision still does, b4 is withdrawn.
        assert _names(newest_bulletins(session, document(D1), 10)) == ["b7", "b6", "b3", "b1"]
        assert _names(newest_bulletins(session, document(D1), 2)) == ["b7", "b6"]
        assert _names(newest_bulletins(session, document(D2), 10)) == ["b6", "b2"]
        assert newest_bulletins(session, document(D3), 10) == []
        assert newest_bulletins(session, document("khong-co"), 10) == []
        assert newest_versions(session, document(D2), 10) == [(ids["b6"], 1), (ids["b2"], 2)]
        # The other listings are untouched by the join.
        assert len(newest_bulletins(session, ALL, 10)) == 5


def test_document_archives_by_month(seeded: tuple[Settings, dict[str, int]]) -> None:
    settings, ids = seeded
    d1 = document(D1)
    with Session(engine_for(settings)) as session:
        assert month_keys(session, d1) == ["2024-01", "2024-02", "2024-03"]
        assert month_keys(session, document(D2)) == ["2024-02", "2024-03"]
        assert month_keys(session, document(D3)) == []
        assert month_versions(session, d1, "2024-02") == [(ids["b3"], 2)]
        assert month_versions(session, d1, "2024-03") == [(ids["b6"], 1), (ids["b7"], 1)]
        assert month_count(session, d1, "2024-03") == 2
        summary = month_summary(session, d1, "2024-03")
        assert (summary.count, summary.id_sum) == (2, ids["b6"] + ids["b7"])
        around = neighbours(session, d1, "2024-02", per_part=1)
        assert around.prev == ("2024-01", 1) and around.next == "2024-03"
        assert neighbours(session, d1, "2024-01", per_part=1).prev is None
        assert newest_month(session, d1, per_part=1) == ("2024-03", 2)
        assert newest_month(session, document(D3), per_part=1) is None


def test_most_cited_counts_published_live_revisions(
    seeded: tuple[Settings, dict[str, int]],
) -> None:
    settings, ids = seeded
    with Session(engine_for(settings)) as session:
        rows = most_cited(session, 10)
        assert [(found.key, count) for found, count in rows] == [(D1, 4), (D2, 2)]
        assert [found.key for found, _ in most_cited(session, 1)] == [D1]
        assert rows[0][0].title == "Quyết định số 628/QĐ-TTg ngày 11/05/2020"
        assert documents_cited_by(session, ids["b2"]) == {D1, D2}
        assert documents_cited_by(session, ids["b5"]) == set()
        # Every document ever cited has a listing (D3: to be rebuilt empty), ordered by key.
        documents = [x for x in all_listings(session) if x.kind is ListingKind.DOCUMENT]
        assert documents == [document(D2), document(D3), document(D1)]
        assert listing_heading(session, document(D1), "Site") == rows[0][0].title
        assert listing_heading(session, document(D2), "Site") == "Kết luận số 51-KL/TW"
        assert listing_heading(session, document("khong-co"), "Site") == "khong-co"


def test_a_rendered_correction_moves_the_bulletin(seeded: tuple[Settings, dict[str, int]]) -> None:
    """b3's revision 2 goes live (its render sets rendered_revision and cited_revision): it
    leaves D1 for D2."""
    settings, ids = seeded
    with session_scope(settings) as session:
        b3 = session.get_one(Bulletin, ids["b3"])
        b3.rendered_revision = b3.cited_revision = 2
    with Session(engine_for(settings)) as session:
        assert _names(newest_bulletins(session, document(D1), 10)) == ["b7", "b6", "b1"]
        assert _names(newest_bulletins(session, document(D2), 10)) == ["b6", "b3", "b2"]


def test_a_repair_owing_a_render_again_keeps_the_bulletin_where_its_page_is(
    seeded: tuple[Settings, dict[str, int]],
) -> None:
    """The reconciler owes a missing page a render by lowering rendered_revision (b6: 1 -> 0,
    b2: 2 -> 1); meanwhile the documents keep listing what the live revision cites."""
    settings, ids = seeded
    with Session(engine_for(settings)) as session:
        before = {key: _names(newest_bulletins(session, document(key), 10)) for key in (D1, D2)}
    with session_scope(settings) as session:
        session.get_one(Bulletin, ids["b6"]).rendered_revision = 0
        session.get_one(Bulletin, ids["b2"]).rendered_revision = 1
    with Session(engine_for(settings)) as session:
        after = {key: _names(newest_bulletins(session, document(key), 10)) for key in (D1, D2)}
    assert after == before
    assert "b6" in after[D1] and "b2" in after[D2] and "b2" not in after[D1]


# -- plans: the listing index, stopped after N, never a sort of the document's citers ------


def _many(settings: Settings, citers: int) -> None:
    """One document cited by `citers` published bulletins, another by a few, and analysed
    statistics, so the planner knows how the rows are spread."""
    create_schema(settings)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    with session_scope(settings) as session:
        agency = Agency(slug="so-y-te", name="Sở Y tế")
        session.add(agency)
        for key in (D1, D2):
            session.add(LegalDocument(key=key, doc_type="Quyết định", number="1", year=None,
                                      issuer="X", name=key, issued_on=None))  # fmt: skip
        session.flush()
        bulletins = [
            {"agency_id": agency.id, "slug": f"b{i}", "title": f"b{i}", "body_format": "text",
             "body_source": "b", "body_html": "b", "published_at": start + timedelta(hours=i),
             "status": BulletinStatus.PUBLISHED if i % 7 else BulletinStatus.WITHDRAWN,
             "revision": 1, "rendered_revision": 1, "cited_revision": 1, "guid": f"urn:uuid:{i}",
             "content_hash": "h", "created_at": start, "updated_at": start}
            for i in range(citers)
        ]  # fmt: skip
        session.execute(insert(Bulletin), bulletins)
        ids = [row[0] for row in session.execute(Bulletin.__table__.select().order_by("id"))]
        session.execute(
            insert(Citation),
            [
                {"bulletin_id": i, "revision": 1, "document_key": D1 if n % 20 else D2,
                 "position": 0, "published_at": start + timedelta(hours=n)}
                for n, i in enumerate(ids)
            ],
        )  # fmt: skip
    with engine_for(settings).begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def _queries() -> list[Select[Any]]:
    """The newest rows, and the first row of a range (what month_keys, neighbours and
    newest_month ask, `_edge`): each an index walk that stops at once."""
    listing = document(D1)
    time = _time(listing)
    first = _published(listing, time).where(time >= datetime(2023, 2, 1, tzinfo=UTC))
    return [
        _newest(listing, Bulletin).limit(50),
        _newest(listing, Bulletin.id, Bulletin.revision).limit(50),
        first.order_by(time, _id(listing)).limit(1),
    ]


def _plan(settings: Settings, query: Select[Any], prefix: str) -> str:
    with engine_for(settings).connect() as conn:
        compiled = query.compile(dialect=conn.dialect)
        if conn.dialect.name == "sqlite":
            params: Any = tuple(compiled.params[name] for name in compiled.positiontup or ())
        else:
            params = compiled.params
        rows = conn.exec_driver_sql(f"{prefix} {compiled}", params)
        return "\n".join(str(row[-1]) for row in rows)


def test_sqlite_walks_the_citation_index_without_sorting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    _many(settings, 2000)
    with Session(engine_for(settings)) as session:
        edge = _edge(session, document(D1), newest=True)
        assert edge is not None and len(newest_bulletins(session, document(D1), 50)) == 50
    for query in _queries():
        plan = _plan(settings, query, "EXPLAIN QUERY PLAN")
        assert "USING INDEX ix_citation_listing" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order
        assert plan.index("citations") < plan.index("bulletins"), plan  # citations drive


def test_postgresql_walks_the_citation_index_without_sorting(tmp_path: Path) -> None:
    with fresh_postgresql("bantin_documents") as url:
        settings = Settings(data_dir=tmp_path, database_url=url)
        try:
            _many(settings, 5000)
            plans = [_plan(settings, query, "EXPLAIN") for query in _queries()]
            with Session(engine_for(settings)) as session:
                newest = newest_bulletins(session, document(D1), 3)
                wanted = [f"b{i}" for i in reversed(range(5000)) if i % 7 and i % 20][:3]
                assert [b.slug for b in newest] == wanted
                assert month_keys(session, document(D2))[0] == "2023-01"
        finally:
            engine_for(settings).dispose()
    for plan in plans:
        assert "ix_citation_listing" in plan, plan
        assert "Sort" not in plan, plan
        assert "Limit" in plan, plan


def test_published_filters_status_for_documents_too() -> None:
    sql = str(_published(document(D1), Bulletin.id))
    assert "citations.document_key" in sql and "bulletins.status" in sql
    assert "bulletins.cited_revision = citations.revision" in sql
    assert Listing(ListingKind.DOCUMENT, D1) == document(D1)
