"""A database the previous release made, with data in it, upgrades with `bantin db upgrade`
and keeps every row, on SQLite and PostgreSQL; the baseline is that release's schema; models
and migrations agree on PostgreSQL; racing upgraders take turns on PostgreSQL too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, inspect, select, text
from sqlalchemy.pool import NullPool

from services.ingest.app import create_app
from shared.agencies import key_owner
from shared.db import session_scope
from shared.migrations import (
    BASELINE,
    alembic_config,
    differences,
    head,
    migration_engine,
    upgrade,
)
from shared.models import Agency, Bulletin
from shared.settings import Settings
from shared.slug import fold
from tests.conftest import fresh_postgresql
from tests.data.migrations.previous import (
    TABLES,
    as_previous,
    load_postgresql,
    load_sqlite,
    made,
    rows,
)
from tests.unit.shared.test_migrations import racers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def previous(
    request: pytest.FixtureRequest, tmp_path: Path, private_redis: str
) -> Iterator[Settings]:
    """Settings of a fresh database holding the previous release's data."""
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path / "data", redis_url=private_redis)
        load_sqlite(settings.data_dir / "bantin.db")
        yield settings
        return
    with fresh_postgresql() as url:
        load_postgresql(url)
        yield Settings(data_dir=tmp_path / "data", database_url=url, redis_url=private_redis)


def cli(settings: Settings, *args: str) -> str:
    env = {**os.environ, "BANTIN_DATA_DIR": str(settings.data_dir)}
    env["BANTIN_REDIS_URL"] = settings.redis_url or ""
    if settings.database_url:
        env["BANTIN_DATABASE_URL"] = settings.database_url
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def dialect_of(settings: Settings) -> str:
    return "postgresql" if settings.database_url else "sqlite"


def test_the_previous_release_database_upgrades_and_keeps_everything(previous: Settings) -> None:
    url = previous.resolved_database_url
    before = rows(url)
    # Not an empty fixture: what the previous release wrote is all there to lose.
    assert [len(before[table]) for table in TABLES] == [2, 3, 3, 5]
    assert "disabled_at" not in before["agencies"][0]

    said = cli(previous, "db", "upgrade")
    assert f"adopted a database made before migrations: stamped {BASELINE}" in said
    assert f"upgraded to {head()}" in said

    after = rows(url)
    assert [{k: v for k, v in a.items() if k != "disabled_at"} for a in after["agencies"]] == (
        before["agencies"]
    )
    assert [agency["disabled_at"] for agency in after["agencies"]] == [None, None]
    for table in ("api_keys", "categories"):
        assert after[table] == before[table], table
    assert as_previous(after["bulletins"]) == before["bulletins"]
    # 0005 folds the existing titles, so title search finds bulletins older than it.
    assert [b["title_folded"] for b in after["bulletins"]] == [
        fold(b["title"]) for b in before["bulletins"]
    ]
    assert all(b["withdrawal_notice"] is None for b in after["bulletins"])
    assert {c["name"] for c in after["categories"]} == {"Hạ tầng", "Y tế", "Khẩn cấp"}

    assert cli(previous, "db", "upgrade").endswith(f"{head()}: nothing to do\n")
    assert cli(previous, "db", "current") == f"{head()} (newest)\n"

    # The service reads what the release wrote: keys, revoked keys, bulletins, as models.
    info = made(dialect_of(previous))
    with session_scope(previous) as session:
        owners = {slug: key_owner(session, key) for slug, key in info["keys"].items()}
        assert {slug: owner.slug for slug, owner in owners.items() if owner} == {
            "bac-kan": "bac-kan", "ha-noi": "ha-noi",
        }  # fmt: skip
        assert key_owner(session, info["revoked_key"]) is None
        assert [a.disabled_at for a in session.scalars(select(Agency))] == [None, None]
        first = session.get(Bulletin, info["bulletin_ids"][0])
        assert first is not None and first.revision == 2
        assert first.title.endswith("Đức Xuân (đính chính)")
        assert first.published_at.tzinfo is not None  # UTCDateTime still reads the old rows

    # And so does the API, with the key the release issued.
    with TestClient(create_app(previous), raise_server_exceptions=False) as client:
        answer = client.get(
            f"/v1/bulletins/{info['bulletin_ids'][1]}",
            headers={"Authorization": f"Bearer {info['keys']['bac-kan']}"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["title"] == "Quyết định về việc phòng, chống dịch bệnh"


def structure(url: str) -> dict[str, Any]:
    """Every table's columns, keys and indexes, as the database reports them."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        found = inspect(engine)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in found.get_columns(table)
                ],
                "primary": found.get_pk_constraint(table)["constrained_columns"],
                "unique": sorted(
                    (u["name"] or "", tuple(u["column_names"]))
                    for u in found.get_unique_constraints(table)
                ),
                "foreign": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"])
                    for f in found.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"] or "", tuple(i["column_names"]), bool(i["unique"]))
                    for i in found.get_indexes(table)
                ),
            }
            for table in TABLES
        }
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_baseline_is_the_previous_release_schema(dialect: str, tmp_path: Path) -> None:
    def baseline(url: str) -> None:
        engine = migration_engine(url)
        try:
            with engine.connect() as connection, connection.begin():
                command.upgrade(alembic_config(connection), BASELINE)
        finally:
            engine.dispose()

    if dialect == "sqlite":
        release, ours = f"sqlite:///{tmp_path}/release.db", f"sqlite:///{tmp_path}/ours.db"
        load_sqlite(tmp_path / "release.db")
        baseline(ours)
        assert structure(ours) == structure(release)
        sql = "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic%' ORDER BY name"
        engines = [create_engine(u, poolclass=NullPool) for u in (release, ours)]
        texts = []
        for engine in engines:
            with engine.connect() as connection:
                texts.append(connection.execute(text(sql)).all())
            engine.dispose()
        assert texts[0] == texts[1]  # the very same CREATE statements
        return
    with fresh_postgresql() as release, fresh_postgresql() as ours:
        load_postgresql(release)
        baseline(ours)
        assert structure(ours) == structure(release)


def test_models_and_migrations_agree_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=postgres_database)
    assert upgrade(settings).after == head()
    engine = migration_engine(postgres_database)
    try:
        with engine.connect() as connection:
            assert differences(connection) == []
    finally:
        engine.dispose()


def test_processes_upgrading_one_postgresql_database_at_once_take_turns(tmp_path: Path) -> None:
    with fresh_postgresql() as url:
        env = {"BANTIN_DATABASE_URL": url, "BANTIN_DATA_DIR": str(tmp_path)}
        start = tmp_path / "go"
        processes = list(racers(4, start, env))
        time.sleep(3)  # not a threshold: only makes the race likelier (the racers have imported)
        start.touch()
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0, 0], outputs
        newest = head()
        # One found it empty; the advisory lock made the others wait and find it done.
        assert sorted(out.strip() for out, _err in outputs) == sorted(
            [f"None {newest}"] + [f"{newest} {newest}"] * 3
        )
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            versions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
        engine.dispose()
        assert versions == [newest]


def index_state(url: str, name: str) -> tuple[bool, bool, list[str]] | None:
    """(valid, unique, columns) of an index, None when there is none."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT i.indisvalid, i.indisunique, array_agg(a.attname::text) "
                    "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indexrelid = to_regclass(:name) "
                    "GROUP BY i.indisvalid, i.indisunique"
                ),
                {"name": name},
            ).one_or_none()
    finally:
        engine.dispose()
    return None if found is None else (found[0], found[1], list(found[2]))


def test_on_postgresql_the_rendered_at_index_is_built_concurrently_outside_a_transaction(
    tmp_path: Path, private_redis: str
) -> None:
    name = "ix_bulletin_rendered_at"
    statements: list[tuple[str, bool]] = []

    def record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        statements.append((statement, cursor.connection.autocommit))  # the driver's own state

    with fresh_postgresql() as url:
        load_postgresql(url)  # the previous release's data: 5 bulletins of 2 agencies
        # A concurrent build that failed (a unique index on repeated values) leaves an
        # INVALID index of that name behind, as a crash or a cancelled upgrade would.
        engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection, pytest.raises(Exception, match="duplicate"):
                connection.execute(
                    text(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON bulletins (agency_id)")
                )
        finally:
            engine.dispose()
        assert index_state(url, name) == (False, True, ["agency_id"])

        settings = Settings(data_dir=tmp_path, database_url=url, redis_url=private_redis)
        event.listen(Engine, "before_cursor_execute", record)
        try:
            done = upgrade(settings)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        assert (done.adopted, done.after) == (BASELINE, head())
        builds = [(sql, auto) for sql, auto in statements if "CREATE INDEX" in sql and name in sql]
        assert builds == [
            (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON bulletins (rendered_at)", True)
        ]
        drops = [(sql.strip(), auto) for sql, auto in statements if "DROP INDEX" in sql]
        assert drops == [(f"DROP INDEX CONCURRENTLY {name}", True)]  # the invalid one
        assert index_state(url, name) == (True, False, ["rendered_at"])
        assert rows(url)["bulletins"]  # the data is still there
        assert upgrade(settings).changed is False
