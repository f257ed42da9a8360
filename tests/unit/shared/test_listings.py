"""Listing queries read the newest N through an index, never the archive."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.db import create_schema, engine_for, session_scope
from shared.listings import (
    Neighbours,
    archive_months,
    listing_heading,
    month_count,
    month_fingerprint,
    month_fingerprints,
    month_keys,
    month_summary,
    month_versions,
    neighbours,
    newest_bulletins,
    newest_month,
    summary_of,
)
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


# -- archives: months of a listing ----------------------------------------------------------


@pytest.fixture
def months_settings(tmp_path: Path) -> Settings:
    """Bulletins on 2024-01-31 23:30, 2024-02-01 00:30 (UTC: month edges), three in April,
    one withdrawn in March; every other one the agency's, the first corrected twice."""
    settings = Settings(data_dir=tmp_path)
    create_schema(settings)
    moments = [
        (datetime(2024, 1, 31, 23, 30, tzinfo=UTC), BulletinStatus.PUBLISHED),
        (datetime(2024, 2, 1, 0, 30, tzinfo=UTC), BulletinStatus.PUBLISHED),
        (datetime(2024, 3, 10, tzinfo=UTC), BulletinStatus.WITHDRAWN),
        (datetime(2024, 4, 2, tzinfo=UTC), BulletinStatus.PUBLISHED),
        (datetime(2024, 4, 3, tzinfo=UTC), BulletinStatus.PUBLISHED),
        (datetime(2024, 4, 1, tzinfo=UTC), BulletinStatus.PUBLISHED),
    ]
    with session_scope(settings) as session:
        health = Agency(slug="so-y-te", name="Sở Y tế")
        other = Agency(slug="so-khac", name="Sở Khác")
        session.add_all([health, other])
        session.flush()
        for i, (moment, status) in enumerate(moments):
            session.add(
                Bulletin(
                    agency_id=(health if i % 2 == 0 else other).id,
                    slug=f"b-{i}", title=f"Bản tin {i}", body_format="text", body_source="b",
                    body_html="<p>b</p>", published_at=moment, status=status,
                    revision=3 if i == 0 else 1, updated_at=moment + timedelta(days=i),
                )
            )  # fmt: skip
    return settings


def test_archive_months_and_their_rows_oldest_first(months_settings: Settings) -> None:
    with Session(engine_for(months_settings)) as session:
        months = archive_months(session, ALL)
        assert [(m.key, m.count) for m in months] == [
            ("2024-01", 1),
            ("2024-02", 1),
            ("2024-04", 3),
        ]
        assert [(m.key, m.count) for m in archive_months(session, AGENCY)] == [
            ("2024-01", 1), ("2024-04", 1),
        ]  # fmt: skip
        assert archive_months(session, Listing(ListingKind.AGENCY, "khong-co")) == []
        # Oldest first by published_at (ids 4, 5, 6 were published 2nd, 3rd, 1st).
        assert month_versions(session, ALL, "2024-04") == [(6, 1), (4, 1), (5, 1)]
        assert month_versions(session, ALL, "2024-03") == []  # its one bulletin was withdrawn
        assert month_versions(session, AGENCY, "2024-01") == [(1, 3)]
        # The summary counts what the rows show.
        for listing in (ALL, AGENCY):
            for month in archive_months(session, listing):
                versions = month_versions(session, listing, month.key)
                assert month.count == len(versions)
                assert month.id_sum == sum(i for i, _ in versions)
                assert month.revision_sum == sum(r for _, r in versions)
        assert months[0].lastmod == datetime(2024, 1, 31, 23, 30, tzinfo=UTC)
        assert months[2].lastmod == datetime(2024, 4, 7, tzinfo=UTC)  # id 5's: April 3 + 4 days


def test_neighbours_skip_empty_months(months_settings: Settings) -> None:
    with Session(engine_for(months_settings)) as session:
        assert neighbours(session, ALL, "2024-02", 2) == Neighbours(("2024-01", 1), "2024-04")
        assert neighbours(session, ALL, "2024-04", 2) == Neighbours(("2024-02", 1), None)
        assert neighbours(session, ALL, "2024-01", 2) == Neighbours(None, "2024-02")
        # March is empty (withdrawn): its neighbours are those on either side of it.
        assert neighbours(session, ALL, "2024-03", 2) == Neighbours(("2024-02", 1), "2024-04")
        assert neighbours(session, AGENCY, "2024-04", 1) == Neighbours(("2024-01", 1), None)
        # The fingerprints the check computes name the same neighbours as the builds.
        fingerprints = month_fingerprints(archive_months(session, ALL), 2)
        for month in archive_months(session, ALL):
            around = neighbours(session, ALL, month.key, 2)
            assert fingerprints[month.key] == month_fingerprint(month, around, 2)
        # The newest archive document: April's, in two parts of 2.
        assert newest_month(session, ALL, 2) == ("2024-04", 2)
        assert newest_month(session, AGENCY, 5) == ("2024-04", 1)
        assert newest_month(session, Listing(ListingKind.AGENCY, "khong-co"), 2) is None


@pytest.mark.parametrize("listing", [ALL, AGENCY, CATEGORY], ids=lambda listing: listing.target)
def test_archive_queries_read_a_range_of_the_listing_index(
    settings: Settings, listing: Listing
) -> None:
    engine = engine_for(settings)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            month_versions(session, listing, "2024-01")
            archive_months(session, listing)
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        assert len(statements) == 4  # rows; first month, its summary, the next month's start
        for statement, parameters in statements:
            plan = session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters
            )
            details = " | ".join(row[-1] for row in plan)
            assert "USING INDEX ix_bulletin_listing_" in details or (
                "USING COVERING INDEX ix_bulletin_listing_" in details
            ), details
            assert "TEMP B-TREE" not in details, details


def test_a_builds_summary_from_its_rows_equals_the_checks(months_settings: Settings) -> None:
    with Session(engine_for(months_settings)) as session:
        for listing in (ALL, AGENCY):
            for key in month_keys(session, listing):
                versions = month_versions(session, listing, key)
                assert summary_of(session, listing, key, versions) == month_summary(
                    session, listing, key
                )
                assert month_count(session, listing, key) == len(versions)
        assert [m.key for m in archive_months(session, ALL)] == month_keys(session, ALL)


def test_the_fingerprint_names_the_cut_into_parts(months_settings: Settings) -> None:
    with Session(engine_for(months_settings)) as session:
        april = month_summary(session, ALL, "2024-04")  # 3 bulletins
    around = Neighbours(("2024-02", 1), None)
    # One part either way, yet a document of up to 5 or of up to 10 entries: a new
    # `archive_items` must make the month stale.
    assert month_fingerprint(april, around, 5) != month_fingerprint(april, around, 10)
    assert month_fingerprint(april, around, 2) != month_fingerprint(april, around, 3)
    assert month_fingerprint(april, around, 5) == month_fingerprint(april, around, 5)


@pytest.mark.parametrize("listing", [ALL, AGENCY, CATEGORY], ids=lambda listing: listing.target)
def test_neighbours_and_month_keys_read_the_index_only(
    settings: Settings, listing: Listing
) -> None:
    engine = engine_for(settings)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with Session(engine) as session:
        event.listen(engine, "before_cursor_execute", capture)
        try:
            month_keys(session, listing)
            around = neighbours(session, listing, "2024-02", 2)
            month_count(session, listing, "2024-01")
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        # One month: two lookups to list it; February's neighbours: three (January's count).
        assert around.prev is not None and around.prev[0] == "2024-01"
        assert len(statements) == 6
        for statement, parameters in statements:
            plan = session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters
            )
            details = [row[-1] for row in plan if "bulletin" in row[-1]]
            assert details and all(
                "USING COVERING INDEX ix_bulletin_listing_" in d for d in details
            ), details
