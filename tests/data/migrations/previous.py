"""Load the previous release's databases (see README.md here) and read every row back."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

HERE = Path(__file__).resolve().parent
TABLES = ("agencies", "api_keys", "categories", "bulletins")
Rows = dict[str, list[dict[str, Any]]]
# Columns later revisions added to the previous release's bulletins: the public withdrawal
# notice (NULL for old rows) and the folded title (filled in by 0005_console); the revision
# whose citations are live (0006_citations; NULL until a render or `bantin rebuild`).
NEW_BULLETIN_COLUMNS = ("withdrawal_notice", "title_folded", "cited_revision")


def made(dialect: str) -> dict[str, Any]:
    """What the previous release printed while making the database: keys, bulletin ids."""
    info: dict[str, Any] = json.loads((HERE / "previous-release.json").read_text())[dialect]
    return info


def load_sqlite(database: Path) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as connection:
        connection.executescript((HERE / "previous-release.sqlite.sql").read_text())
    connection.close()


def load_postgresql(url: str) -> None:
    import psycopg

    plain = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
    with psycopg.connect(plain, autocommit=True) as connection:
        # No parameters: psycopg sends the dump's statements as one simple query.
        connection.execute((HERE / "previous-release.postgresql.sql").read_text())  # type: ignore[arg-type]


def rows(url: str) -> Rows:
    """Every row of every table, in id order, as the database holds it."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine, only=TABLES)
        with engine.connect() as connection:
            return {
                name: [
                    dict(row._mapping)
                    for row in connection.execute(
                        select(metadata.tables[name]).order_by(metadata.tables[name].c.id)
                    )
                ]
                for name in TABLES
            }
    finally:
        engine.dispose()


def as_previous(bulletins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bulletin rows without the columns added since the previous release."""
    return [{k: v for k, v in row.items() if k not in NEW_BULLETIN_COLUMNS} for row in bulletins]
