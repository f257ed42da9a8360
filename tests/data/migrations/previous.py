"""Load the previous release's databases (see README.md here) and read every row back."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

HERE = Path(__file__).resolve().parent
TABLES = ("agencies", "api_keys", "categories", "bulletins")
Rows = dict[str, list[dict[str, Any]]]


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


@contextmanager
def fresh_postgresql() -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    import psycopg

    from tests.conftest import POSTGRES_ADMIN_URL

    name = f"bantin_mig_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    base = re.sub(r"^postgresql(\+\w+)?://", "postgresql+psycopg://", POSTGRES_ADMIN_URL)
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
