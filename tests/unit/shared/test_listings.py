"""Listing queries read the newest N through an index, never the archive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.db import create_schema, engine_for, session_scope
from shared.listings import listing_heading, newest_bulletins
from shared.models import Agency, Bulletin, BulletinStatus, Category
from shared.settings import Settings
from shared.site import ALL, Listing, ListingKind

AGENCY = Listing(ListingKind.AGENCY, "so-y-te")
CATEGORY = Listing(ListingKind.CATEGORY, "giao-duc")
START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    create_schema(settings)
    with session_scope(settings) as session:
        health = Agency(slug="so-y-te", name="Sở Y tế")
        other = Agency(slug="so-khac", name="Sở Khác")
        session.add_all([health, other, Category(slug="giao-duc", name="Giáo dục")])
        session.flush()
        for i in range(60):
            session.add(
                Bulletin(
                    agency_id=(health if i % 2 else other).id,
                    slug=f"b-{i}", title=f"Bản tin {i}", body_format="text", body_source="b",
                    body_html="<p>b</p>", category="Giáo dục" if i % 3 == 0 else None,
                    category_slug="giao-duc" if i % 3 == 0 else None,
                    # Every tenth bulletin shares its time with the one before: ties broken by id.
                    published_at=START + timedelta(hours=i - (i % 10 == 1)),
                    status=BulletinStatus.QUEUED if i == 59 else BulletinStatus.PUBLISHED,
                )
            )  # fmt: skip
    return settings


def titles(bulletins: list[Bulletin]) -> list[int]:
    return [int(b.title.rsplit(" ", 1)[1]) for b in bulletins]


def test_newest_first_published_only_scoped_and_limited(settings: Settings) -> None:
    with Session(engine_for(settings)) as session:
        assert titles(newest_bulletins(session, ALL, 5)) == [58, 57, 56, 55, 54]
        assert titles(newest_bulletins(session, AGENCY, 4)) == [57, 55, 53, 51]
        assert titles(newest_bulletins(session, CATEGORY, 3)) == [57, 54, 51]
        assert newest_bulletins(session, Listing(ListingKind.AGENCY, "khong-co"), 5) == []
        ties = [
            b for b in newest_bulletins(session, ALL, 60) if b.title in ("Bản tin 10", "Bản tin 11")
        ]
        assert titles(ties) == [11, 10]  # same time: the later id first


def test_listing_headings(settings: Settings) -> None:
    with Session(engine_for(settings)) as session:
        assert listing_heading(session, AGENCY, "Bản tin") == "Sở Y tế"
        assert listing_heading(session, CATEGORY, "Bản tin") == "Giáo dục"
        assert listing_heading(session, ALL, "Bản tin") == "Bản tin"


@pytest.mark.parametrize("listing", [ALL, AGENCY, CATEGORY], ids=lambda listing: listing.target)
def test_each_listing_query_walks_an_index_without_sorting(
    settings: Settings, listing: Listing
) -> None:
    engine = engine_for(settings)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            newest_bulletins(session, listing, 50)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        statement, parameters = statements[-1]
        plan = session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        details = " | ".join(row[-1] for row in plan)
    assert "LIMIT" in statement
    assert "USING INDEX ix_bulletin_listing_" in details, details
    assert "TEMP B-TREE" not in details, details  # no sort: the index gives the order
