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
from dataclasses import dataclass
from datetime import datetime

from celery import Celery
from sqlalchemy import select, tuple_
from sqlalchemy.exc import (
    DataError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.orm import Session

from services.ingest import service
from services.ingest.problems import Problem
from services.ingest.schemas import BulletinCreate
from shared import faults
from shared.celery_app import RENDER_BULLETIN
from shared.db import session_factory
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.settings import Settings

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
    body_html: str  # sanitised by the request beforehand: this thread only stores
    idempotency_key: str | None
    future: Future[Accepted]


Outcome = Accepted | Problem


def _accepted(bulletin: Bulletin, created: bool) -> Accepted:
    return Accepted(bulletin.id, bulletin.status, bulletin.revision, bulletin.slug, created)


def unavailable(detail: str = "The database is unavailable; nothing was stored. Retry later.",
                ) -> Problem:  # fmt: skip
    return Problem(503, "Service unavailable", detail)


def _database_down(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError)


def _problem_for(exc: Exception) -> Problem:
    """The answer for a bulletin that could not be stored: never a bare 500."""
    if isinstance(exc, Problem):
        return exc
    if _database_down(exc):
        return unavailable()
    cause = exc.orig if isinstance(exc, StatementError) else exc
    if isinstance(exc, DataError) or isinstance(cause, ValueError | OverflowError | TypeError):
        # Validation mirrors the columns, so this is a gap in it: say what failed, not where.
        log.warning("a bulletin passed validation but could not be stored: %s", exc)
        return Problem(
            422,
            "Invalid bulletin",
            "A value in this bulletin cannot be stored; nothing was stored.",
        )
    log.error("could not store a bulletin", exc_info=exc)
    return unavailable("The bulletin could not be stored; nothing was stored. Retry later.")


class GroupWriter:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        self._sessions = session_factory(settings)
        self._queue: queue.SimpleQueue[Submission | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, agency_id: int, bulletin_in: BulletinCreate, body_html: str,
               idempotency_key: str | None) -> Future[Accepted]:  # fmt: skip
        future: Future[Accepted] = Future()
        if not self.alive:  # never queue work nobody will do
            future.set_exception(unavailable("The writer is not running; nothing was stored."))
            return future
        self._queue.put(Submission(agency_id, bulletin_in, body_html, idempotency_key, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = self._take(first)
            try:
                self._write(batch)
            except Exception:
                # This thread serves every request of the process: whatever happened to this
                # batch, answer its requests and go on with the next.
                log.exception("ingest writer: a batch failed")
                for item in batch:
                    _settle(item.future, unavailable())

    def _take(self, first: Submission) -> list[Submission]:
        """`first` and whatever queued up meanwhile; requests cancelled before this point
        (their client went away) are dropped, the others can no longer be cancelled."""
        batch = [first] if first.future.set_running_or_notify_cancel() else []
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            if item.future.set_running_or_notify_cancel():
                batch.append(item)
        return batch

    def _write(self, batch: list[Submission]) -> None:
        if not batch:
            return
        outcomes: list[Outcome]
        try:
            outcomes = self._write_together(batch)
        except Exception as exc:
            if _database_down(exc):
                outcomes = [unavailable() for _ in batch]  # one each: raising one alters it
            else:
                # One item failed the group (a value the database refused, or another process
                # took one of these idempotency keys since the lookup): write each alone, so an
                # error stays with its own request.
                log.info("group commit failed (%s); writing its %d items one by one",
                         type(exc).__name__, len(batch))  # fmt: skip
                outcomes = [self._write_alone(item) for item in batch]
        faults.checkpoint(self.settings, faults.INGEST_AFTER_COMMIT)
        self._enqueue([o for o in outcomes if isinstance(o, Accepted) and o.created])
        for item, outcome in zip(batch, outcomes, strict=True):
            _settle(item.future, outcome)

    def _write_together(self, batch: list[Submission]) -> list[Outcome]:
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
                    bulletin = self._new(session, item, now)
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

    def _new(self, session: Session, item: Submission, now: datetime) -> Bulletin:
        return service.new_bulletin(
            session, agency_id=item.agency_id, bulletin_in=item.bulletin_in,
            body_html=item.body_html, idempotency_key=item.idempotency_key, now=now,
        )  # fmt: skip

    def _write_alone(self, item: Submission) -> Outcome:
        """One bulletin in its own transaction (or the one this idempotent request made)."""
        digest = service.request_hash(item.bulletin_in)
        key = item.idempotency_key
        with self._sessions() as session:
            try:
                if key and (found := service.replay(session, item.agency_id, key, digest)):
                    return _accepted(found, False)
                bulletin = self._new(session, item, utcnow())
                session.add(bulletin)
                session.commit()
                return _accepted(bulletin, True)
            except IntegrityError as exc:
                # Two requests with one key raced past the lookup: the loser answers with the
                # winner's bulletin.
                session.rollback()
                try:
                    if key and (found := service.replay(session, item.agency_id, key, digest)):
                        return _accepted(found, False)
                except Exception as again:
                    return _problem_for(again)
                return _problem_for(exc)
            except Exception as exc:
                session.rollback()
                return _problem_for(exc)

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


def _settle(future: Future[Accepted], outcome: Outcome | BaseException) -> None:
    """Answer a request once; a future already answered is left as it is."""
    if future.done():
        return
    if isinstance(outcome, Accepted):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
