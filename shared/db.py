"""Engine and session factories. Nothing connects at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the gateway-side readers and the workers read while ingest writes;
    # busy_timeout makes concurrent writers wait instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at every checkpoint, safe with WAL
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: after a database restart, stale pooled connections are replaced
    # instead of failing the first request that picks them.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def engine_for(settings: Settings) -> Engine:
    return get_engine(settings.resolved_database_url)


@lru_cache(maxsize=8)
def _session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return _session_factory(engine_for(settings))


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with session_factory(settings)() as session, session.begin():
        yield session


def create_schema(settings: Settings) -> None:
    """The newest schema, made by the migrations (so the database is versioned, as in use)."""
    from shared.migrations import upgrade

    upgrade(settings)
