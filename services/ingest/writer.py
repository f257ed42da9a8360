"""Group commit: one thread writes every new bulletin of this process, many per transaction.

With a request per thread, each insert is its own transaction, and on SQLite every writer
waits on one lock with sleeping retries (busy_timeout), which capped ingest at ~180 accepted/s
with a p99 of a second on this machine. Here requests hand their bulletin to one writer
thread and await the result; the writer commits whatever has queued up meanwhile (up to
MAX_BATCH) in one transaction, then queues the renders. Under load, batches grow by
themselves; at rest, a batch is one bulletin and no latency is added.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest import service
from services.ingest.schemas import BulletinCreate
from shared import faults
from shared.celery_app import RENDER_BULLETIN
from shared.db import session_factory
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.settings import Settings
from shared.slug import slugify

log = logging.getLogger(__name__)
MAX_BATCH = 200


@dataclass(frozen=True)
class Accepted:
    """What the API answers about a stored bulletin (plain data: it crosses threads)."""

    id: int
    status: str
    revision: int
    slug: str
    created: bool  # False: an idempotent replay of an earlier request


@dataclass
class Submission:
    agency_id: int
    bulletin_in: BulletinCreate
    idempotency_key: str | None
    future: Future[Accepted]


def _accepted(bulletin: Bulletin, created: bool) -> Accepted:
    return Accepted(bulletin.id, bulletin.status, bulletin.revision, bulletin.slug, created)


class GroupWriter:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        self._sessions = session_factory(settings)
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    def submit(self, agency_id: int, bulletin_in: BulletinCreate,
               idempotency_key: str | None) -> Future[Accepted]:  # fmt: skip
        future: Future[Accepted] = Future()
        self._queue.put(Submission(agency_id, bulletin_in, idempotency_key, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[Submission]) -> None:
        try:
            outcomes = self._write_together(batch)
        except IntegrityError:
            # Another ingest process took one of these idempotency keys between our lookup
            # and our commit: redo them one by one, each resolving its own race.
            outcomes = [self._write_alone(item) for item in batch]
        except Exception as exc:  # the database is down: every request gets the error
            for item in batch:
                item.future.set_exception(exc)
            return
        faults.checkpoint(self.settings, faults.INGEST_AFTER_COMMIT)
        self._enqueue([o for o in outcomes if isinstance(o, Accepted) and o.created])
        for item, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                item.future.set_result(outcome)
            else:
                item.future.set_exception(outcome)

    def _write_together(self, batch: list[Submission]) -> list[Accepted | Exception]:
        with self._sessions() as session:
            known = self._known_keys(session, batch)
            # What each item came to, resolved once the commit has given new rows their ids:
            # ("new" | "replay" | "conflict", the bulletin concerned).
            outcomes: list[tuple[str, Bulletin, Submission]] = []
            fresh: dict[tuple[int, str], Bulletin] = {}
            now = utcnow()
            for item in batch:
                digest = service.request_hash(item.bulletin_in)
                key = (item.agency_id, item.idempotency_key) if item.idempotency_key else None
                earlier = (known.get(key) or fresh.get(key)) if key else None
                if earlier is None:
                    bulletin = _new_bulletin(session, self.settings, item, digest, now)
                    session.add(bulletin)
                    if key:
                        fresh[key] = bulletin
                    outcomes.append(("new", bulletin, item))
                elif earlier.request_hash != digest:
                    outcomes.append(("conflict", earlier, item))
                else:
                    outcomes.append(("replay", earlier, item))
            session.commit()
        return [
            service.key_conflict(item.idempotency_key or "", bulletin)
            if kind == "conflict"
            else _accepted(bulletin, kind == "new")
            for kind, bulletin, item in outcomes
        ]

    @staticmethod
    def _known_keys(session: Session, batch: list[Submission]) -> dict[tuple[int, str], Bulletin]:
        keys = {(i.agency_id, i.idempotency_key) for i in batch if i.idempotency_key}
        if not keys:
            return {}
        rows = session.scalars(
            select(Bulletin).where(tuple_(Bulletin.agency_id, Bulletin.idempotency_key).in_(keys))
        )
        return {(b.agency_id, b.idempotency_key): b for b in rows if b.idempotency_key}

    def _write_alone(self, item: Submission) -> Accepted | Exception:
        with self._sessions() as session:
            try:
                bulletin, created = service.create_bulletin(
                    session=session, settings=self.settings, agency_id=item.agency_id,
                    bulletin_in=item.bulletin_in, idempotency_key=item.idempotency_key,
                )  # fmt: skip
            except Exception as exc:
                return exc
            return _accepted(bulletin, created)

    def _enqueue(self, created: list[Accepted]) -> None:
        """Best effort, one producer for the batch: the rows are committed, so anything lost
        here is re-sent by the reconciler."""
        pending = [a for a in created if a.status == BulletinStatus.QUEUED]
        if not pending:
            return
        try:
            with self.celery.producer_or_acquire() as producer:
                for accepted in pending:
                    self.celery.send_task(RENDER_BULLETIN, args=[accepted.id, accepted.revision],
                                          producer=producer)  # fmt: skip
        except Exception:
            log.warning("could not queue %d bulletins; the reconciler will re-send them",
                        len(pending), exc_info=True)  # fmt: skip


def _batched(producer: Any) -> AbstractContextManager[Any]:
    """One Redis pipeline for the batch's messages where Kombu offers it (5.7+): a publish
    then costs 0.22 ms instead of 0.37 ms, measured (it was a quarter of ingest's CPU)."""
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else nullcontext()


def _new_bulletin(session: Session, settings: Settings, item: Submission, digest: str,
                  now: datetime) -> Bulletin:  # fmt: skip
    bulletin = Bulletin(
        agency_id=item.agency_id,
        slug=slugify(item.bulletin_in.title),
        idempotency_key=item.idempotency_key,
        request_hash=digest,
        created_at=now,
    )
    service.apply_new(session, settings, bulletin, item.bulletin_in, now)
    return bulletin
