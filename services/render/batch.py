"""Re-render many article pages per task: the worker side of `bantin rebuild`.

After a template change the operator restarts the render workers (templates are compiled
once per process) and runs `bantin rebuild`, which sends this task one batch of bulletin ids
at a time. A batch loads its rows in one query, renders each page with the current templates
and writes it, then counts what it did in Redis so the command can show real progress.

A rebuild changes no row but citations: status, revision and rendered_revision stay as they
are (cited_revision is set to the live revision whose citation rows it rewrites). It only
rewrites what is already live, so it never races a normal render into showing stale
content:

- a row is rebuilt only while its live page is current: published (or withdrawn, and then
  only if it ever was public) with rendered_revision == revision and no render owed;
- the pages are written while the batch holds the rows' write lock (SQLite: the database's
  write lock, ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT … FOR UPDATE``), after checking under
  that lock that each row is still at the revision that was rendered. A correction commits
  either before the check (the row is skipped; its own render writes the new page) or after
  the write (its render overwrites ours). This is the same rule as `jobs.publish_bulletin`,
  which writes while its guarded UPDATE holds the row.

Each live published page is also re-extracted (shared.citations): its links and its list of
cited documents follow the current extraction, and under the same lock the citation rows
of its live revision are replaced (deleted, then inserted; documents rows ON CONFLICT DO
NOTHING). So a site upgraded from a release without citations gets them by `bantin
rebuild`, whose listing phase then rebuilds every document's page and feeds and /van-ban/.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from celery import Task, shared_task
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import defer

from services.render.jobs import (
    citation_rows,
    delete_citations,
    insert_citations,
    insert_documents,
)
from services.render.pages import PageRenderer
from shared import citations
from shared.celery_app import RENDER_BATCH
from shared.db import engine_for, session_factory
from shared.models import Bulletin, BulletinStatus
from shared.rebuild_progress import BatchReport, record_batch
from shared.runtime import worker_runtime
from shared.settings import Settings
from shared.site import article_path, file_for, tombstone_for
from shared.storage import Storage

log = logging.getLogger(__name__)

# Pages written per locked transaction. On SQLite the lock is the whole database's: 100
# pages hold it ~11 ms (a 1 ms check, then ~0.1 ms a page write; measured), so an ingest
# commit waits at most that long, where a whole batch would hold it for ~30 ms.
WRITE_CHUNK = 100
_BULLETINS: Any = Bulletin.__table__
# Marks a rebuilt page's rewritten citation rows as the live ones: one executemany a chunk.
_CITED = (
    _BULLETINS.update()
    .where(_BULLETINS.c.id == bindparam("b_id"))
    .values(cited_revision=bindparam("b_rev"))
)
MAX_RETRIES = 4


@dataclass(frozen=True)
class _Rendered:
    bulletin_id: int
    revision: int
    status: str
    html: bytes
    write: PurePosixPath  # the file that gets the html
    remove: PurePosixPath | None  # a withdrawn bulletin's article file, which must go
    published_at: datetime
    # What the live revision cites (none for a withdrawal: it keeps no citation rows).
    documents: list[citations.Document] = field(default_factory=list)


def _live(bulletin: Bulletin) -> bool:
    """Is what the site shows for this bulletin its current revision?"""
    if bulletin.rendered_revision != bulletin.revision or bulletin.pending_since is not None:
        return False  # a render is owed: it will write the page, with the new templates
    if bulletin.status == BulletinStatus.PUBLISHED:
        return True
    # A bulletin withdrawn before it was ever rendered has no tombstone, and must not get
    # one: that would reveal that it existed (see ingest's withdraw_bulletin).
    return bulletin.status == BulletinStatus.WITHDRAWN and bulletin.rendered_at is not None


def _render(renderer: PageRenderer, bulletin: Bulletin) -> _Rendered:
    url_path = article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    documents: list[citations.Document] = []
    if bulletin.status == BulletinStatus.WITHDRAWN:
        html, write, remove = (
            renderer.withdrawn(bulletin),
            tombstone_for(url_path),
            file_for(url_path),
        )
    else:
        documents = citations.extract_bulletin(bulletin.title, bulletin.summary, bulletin.body_html)
        html, write, remove = renderer.article(bulletin, documents), file_for(url_path), None
    return _Rendered(
        bulletin.id, bulletin.revision, bulletin.status, html.encode(), write, remove,
        bulletin.published_at, documents,
    )  # fmt: skip


@contextlib.contextmanager
def _locked_versions(
    settings: Settings, ids: Sequence[int]
) -> Iterator[tuple[Connection, dict[int, tuple[int, int, str, bool]]]]:
    """Hold the write lock of these rows; yields the connection holding it and id ->
    (revision, rendered_revision, status, pending) as they are under the lock. Commits
    (releasing it, and keeping what was written through the connection) when the block
    ends."""
    with engine_for(settings).connect() as conn:
        query = select(
            Bulletin.id,
            Bulletin.revision,
            Bulletin.rendered_revision,
            Bulletin.status,
            Bulletin.pending_since.is_not(None).label("pending"),
        ).where(Bulletin.id.in_(ids))
        if conn.dialect.name == "sqlite":
            _begin_immediate(conn)
        else:
            query = query.order_by(Bulletin.id).with_for_update()  # lock in one order
        rows = conn.execute(query)
        yield (
            conn,
            {
                row.id: (row.revision, row.rendered_revision, row.status, bool(row.pending))
                for row in rows
            },
        )
        conn.commit()


def _begin_immediate(conn: Connection) -> None:
    # pysqlite opens a transaction only before a write; BEGIN IMMEDIATE takes the database's
    # write lock now (waiting up to busy_timeout), so the check and the writes that follow
    # cannot interleave with an ingest correction or a render's guarded UPDATE.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def rebuild_pages(
    settings: Settings, storage: Storage, renderer: PageRenderer, ids: Sequence[int]
) -> BatchReport:
    """Re-render the live page of each bulletin in `ids` (see the module docstring)."""
    report = BatchReport()
    rendered: list[_Rendered] = []
    with session_factory(settings)() as session:
        # One query for the whole batch, agencies joined (Bulletin.agency is lazy="joined");
        # body_source is the one large column no page shows: not loaded, and raiseload
        # makes an accidental use fail loudly instead of costing a query per row.
        bulletins = session.scalars(
            select(Bulletin)
            .options(defer(Bulletin.body_source, raiseload=True))
            .where(Bulletin.id.in_(ids))
        )
        for bulletin in bulletins:
            if _live(bulletin):
                rendered.append(_render(renderer, bulletin))
    report.skipped = len(ids) - len(rendered)

    for start in range(0, len(rendered), WRITE_CHUNK):
        chunk = rendered[start : start + WRITE_CHUNK]
        with _locked_versions(settings, [page.bulletin_id for page in chunk]) as (conn, now):
            current = [
                page
                for page in chunk
                if now.get(page.bulletin_id) == (page.revision, page.revision, page.status, False)
            ]
            report.skipped += len(chunk) - len(current)  # changed since: their renders write
            # The chunk's new documents first, all in one key order (see insert_documents),
            # then each live revision's citations as its page now links them.
            # Three statements for the chunk, not per page: the SQLite write lock is held
            # meanwhile.
            published = [page for page in current if page.remove is None]
            insert_documents(conn, (found for page in published for found in page.documents))
            delete_citations(conn, [(page.bulletin_id, page.revision) for page in published])
            insert_citations(
                conn,
                [
                    row
                    for page in published
                    for row in citation_rows(
                        page.bulletin_id, page.revision, page.published_at, page.documents
                    )
                ],
            )
            # Those rows are the live ones (bulletins from before citations had none).
            if published:
                conn.execute(
                    _CITED,
                    [{"b_id": page.bulletin_id, "b_rev": page.revision} for page in published],
                )
            for page in current:
                storage.put(page.write, page.html)
                if page.remove is None:
                    report.pages += 1
                else:
                    storage.delete(page.remove)
                    report.tombstones += 1
    return report


# -- the task -------------------------------------------------------------------------------


@cache
def _renderer() -> PageRenderer:
    return PageRenderer(worker_runtime().settings)  # templates compiled once per process


@shared_task(name=RENDER_BATCH, bind=True, max_retries=MAX_RETRIES)
def render_batch(self: Task, run_id: str, batch_no: int, ids: list[int]) -> int:
    """Rebuild the pages of `ids`; returns how many were rewritten."""
    runtime = worker_runtime()
    try:
        report = rebuild_pages(runtime.settings, runtime.storage, _renderer(), ids)
    except Exception as exc:
        retries = self.request.retries
        if retries < MAX_RETRIES:
            raise self.retry(exc=exc, countdown=min(2**retries, 30)) from exc
        # Out of retries: count the batch as failed, so the command finishes and says so
        # instead of waiting for pages that will never come.
        log.exception("rebuild %s: batch %s failed for good", run_id, batch_no)
        record_batch(runtime.redis, run_id, batch_no, BatchReport(failed=len(ids)))
        raise
    record_batch(runtime.redis, run_id, batch_no, report)
    return report.pages + report.tombstones
