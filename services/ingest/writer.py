"""Group commit: one thread writes every new bulletin of this process, many per transaction.

With a request per thread, each insert is its own transaction, and on SQLite every writer
waits on one lock with sleeping retries (busy_timeout), which capped ingest at ~180 accepted/s
with a p99 of a second on this machine. Here requests hand their bulletin to one writer
thread and await the result; the writer commits whatever has queued up meanwhile (up to
MAX_BATCH) in one transaction, then queues the renders. Under load, batches grow by
themselves; at rest, a batch is one bulletin and no latency is added.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from celery import Celery
from celery.utils.nodenames import anon_nodename
from redis import Redis
from sqlalchemy import Row, Table, insert
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
from shared.celery_app import RENDER_BULLETIN, RENDER_QUEUE
from shared.db import session_factory
from shared.models import Bulletin, BulletinStatus, utcnow
from shared.settings import Settings

log = logging.getLogger(__name__)
MAX_BATCH = 200
_BULLETINS = cast(Table, Bulletin.__table__)


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


class RenderPublisher:
    """Render messages straight onto the render queue's Redis list: what Kombu's Redis
    transport writes for `send_task(RENDER_BULLETIN, args=[id, revision])` (Celery's message
    protocol 2, the body base64-encoded in Kombu's JSON envelope, routed by queue name through
    the nameless exchange), built from a template and pushed in one pipeline per batch.
    Kombu's per-message publish path cost 0.2 ms a message; this costs a few µs.
    tests/unit/ingest/test_writer_publish.py checks the message against Celery's own."""

    def __init__(self, celery: Celery, redis: Redis) -> None:
        self.redis = redis
        self.reply_to = celery.thread_oid  # what send_task puts there
        self.origin = anon_nodename()

    @staticmethod
    def fits(celery: Celery) -> bool:
        """Whether the configuration is the one the message template copies: no key prefix,
        no priorities (Kombu would then write to another list, one no worker reads), render
        tasks routed to the render queue through the nameless exchange. Otherwise: Kombu."""
        conf = celery.conf
        route = conf.task_routes.get("render.*") if isinstance(conf.task_routes, dict) else None
        return (
            not (conf.broker_transport_options or {}).get("global_keyprefix")
            and conf.task_default_priority is None
            and conf.task_queue_max_priority is None
            and route == {"queue": RENDER_QUEUE, "exchange": "", "routing_key": RENDER_QUEUE}
        )

    def message(self, bulletin_id: int, revision: int) -> bytes:
        task_id = str(uuid.uuid4())
        args = [bulletin_id, revision]
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        body = json.dumps([args, {}, embed]).encode()
        headers = {
            "lang": "py", "task": RENDER_BULLETIN, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": "{}", "origin": self.origin,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        }  # fmt: skip
        envelope = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": self.reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": RENDER_QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },  # fmt: skip
        }
        return json.dumps(envelope).encode()

    def publish(self, renders: list[tuple[int, int]]) -> None:
        """LPUSH each (bulletin id, revision) message, in one round trip: priority 0 goes to
        the list named after the queue, as Kombu puts it."""
        pipe = self.redis.pipeline(transaction=False)
        for bulletin_id, revision in renders:
            pipe.lpush(RENDER_QUEUE, self.message(bulletin_id, revision))
        pipe.execute()


class GroupWriter:
    def __init__(self, settings: Settings, celery: Celery, redis: Redis | None = None) -> None:
        """`redis`: a client of the broker, for the lean publish path; without one (a
        non-Redis broker) render messages go through Kombu."""
        self.settings = settings
        self.celery = celery
        lean = redis is not None and RenderPublisher.fits(celery)
        self._publisher = RenderPublisher(celery, redis) if redis is not None and lean else None
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
        """The batch in one transaction: its new rows in one executemany (Core, not the ORM
        unit of work: a third of the writer's CPU went to flushing objects nobody reads)."""
        with self._sessions() as session:
            known = self._known_keys(session, batch)
            # What each item came to, once the insert has given new rows their ids: a new row
            # (its index in `rows`), a replay of an earlier one, or a conflict with it.
            plan: list[tuple[str, int | Row[Any], Submission]] = []
            rows: list[dict[str, Any]] = []
            fresh: dict[tuple[int, str], int] = {}
            now = utcnow()
            for item in batch:
                key = (item.agency_id, item.idempotency_key) if item.idempotency_key else None
                if key is not None and key in known:
                    earlier = known[key]
                    same = earlier.request_hash == service.request_hash(item.bulletin_in)
                    plan.append(("replay" if same else "conflict", earlier, item))
                elif key is not None and key in fresh:  # the same key twice in this batch
                    first = rows[fresh[key]]
                    same = first["request_hash"] == service.request_hash(item.bulletin_in)
                    plan.append(("replay" if same else "conflict", fresh[key], item))
                else:
                    if key is not None:
                        fresh[key] = len(rows)
                    rows.append(self._new(session, item, now))
                    plan.append(("new", len(rows) - 1, item))
            stored = self._insert(session, rows)
            session.commit()
        outcomes: list[Outcome] = []
        for kind, target, item in plan:
            if isinstance(target, int):  # a row of this batch
                row = stored[target]
                if kind == "conflict":
                    outcomes.append(service.key_conflict(item.idempotency_key or "", row.id))
                else:
                    outcomes.append(Accepted(row.id, row.status, row.revision, row.slug,
                                             kind == "new"))  # fmt: skip
            elif kind == "conflict":
                outcomes.append(service.key_conflict(item.idempotency_key or "", target.id))
            else:
                outcomes.append(Accepted(target.id, target.status, target.revision, target.slug,
                                         False))  # fmt: skip
        return outcomes

    @staticmethod
    def _insert(session: Session, rows: list[dict[str, Any]]) -> list[Row[Any]]:
        """Insert the rows; their (id, status, revision, slug), in the order of `rows`."""
        if not rows:
            return []
        returned = session.execute(
            insert(_BULLETINS).returning(
                _BULLETINS.c.id, _BULLETINS.c.status, _BULLETINS.c.revision, _BULLETINS.c.slug,
                sort_by_parameter_order=True,
            ),
            rows,
        )  # fmt: skip
        return list(returned)

    @staticmethod
    def _known_keys(session: Session, batch: list[Submission]) -> dict[tuple[int, str], Row[Any]]:
        """The rows earlier requests made with this batch's keys: only the columns an answer
        needs, looked up per agency with `agency_id = ? AND key IN (…)`, which searches the
        unique index (SQLite scanned the whole index for the row-value `(agency_id, key) IN
        (…)`). Written as SQL text: SQLAlchemy's expansion of a 200-value IN cost more CPU
        than the rest of the batch's statements together (profiled)."""
        by_agency: dict[int, list[str]] = {}
        for item in batch:
            if item.idempotency_key:
                by_agency.setdefault(item.agency_id, []).append(item.idempotency_key)
        found: dict[tuple[int, str], Row[Any]] = {}
        connection = session.connection()
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        for agency, keys in by_agency.items():
            unique = list(dict.fromkeys(keys))
            sql = (f"SELECT agency_id, idempotency_key, request_hash, id, status, revision, slug "
                   f"FROM {_BULLETINS.name} WHERE agency_id = {mark} AND idempotency_key IN "
                   f"({', '.join([mark] * len(unique))})")  # fmt: skip
            for row in connection.exec_driver_sql(sql, (agency, *unique)):
                found[(row.agency_id, row.idempotency_key)] = cast(Row[Any], row)
        return found

    @staticmethod
    def _new(session: Session, item: Submission, now: datetime) -> dict[str, Any]:
        return service.new_bulletin_values(
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
                [row] = self._insert(session, [self._new(session, item, utcnow())])
                session.commit()
                return Accepted(row.id, row.status, row.revision, row.slug, True)
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
            if self._publisher is not None:
                self._publisher.publish([(a.id, a.revision) for a in pending])
                return
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
