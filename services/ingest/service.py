"""Accepting, correcting and withdrawing bulletins.

Each change is one committed row (the bulletin, with `pending_since` set: the outbox), then a
best-effort message to the render queue. If the message is lost, the reconciler re-sends it
from the row, so an answered request is never lost.

Every change to an existing bulletin is a compare-and-set: the row is read, the change is
decided from what was read, and the UPDATE applies only if the row still holds what was read
(its revision, the revision live on the page and its status). A render, the reconciler or
another request that committed in between makes it miss; the change is then decided again
from the fresh row. So a withdrawal never overwrites a render it did not see, and two
corrections become two revisions instead of one lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celery import Celery
from sqlalchemy import CursorResult, event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from services.ingest.metrics import ACCEPTED, CORRECTIONS, WITHDRAWALS
from services.ingest.problems import Problem
from services.ingest.schemas import WITHDRAWAL_NOTICE_MAX, BulletinCreate
from shared.celery_app import RENDER_BULLETIN
from shared.logs import bulletin_fields
from shared.models import (
    MAX_ID,
    BodyFormat,
    Bulletin,
    BulletinStatus,
    Category,
    Citation,
    LegalDocument,
    utcnow,
)
from shared.refresh import Job, Refresher
from shared.sanitize import MAX_NESTING, body_to_html, clean_text, nesting_depth
from shared.settings import Settings
from shared.site import ARCHIVE_CHECK, Listing, ListingKind, archive
from shared.slug import fold, slugify

if TYPE_CHECKING:
    from services.ingest.writer import Accepted

log = logging.getLogger(__name__)
# Accepted bulletins, corrections and withdrawals are logged under the API's resource module,
# whoever (API or console) made them: one event stream, as before both shared this code.
events = logging.getLogger("services.ingest.bulletins")

# A compare-and-set that keeps missing means a storm of changes to one bulletin; each miss
# means another change committed, so the system as a whole is making progress.
MAX_CHANGE_ATTEMPTS = 50


def request_hash(bulletin_in: BulletinCreate) -> str:
    """A digest of the validated request, so JSON spacing or key order never looks like a change."""
    return hashlib.sha256(bulletin_in.model_dump_json().encode()).hexdigest()


def key_conflict(key: str, existing_id: int) -> Problem:
    return Problem(
        409,
        "Idempotency key reused",
        f"The Idempotency-Key {key!r} was already used for a different bulletin "
        f"(id {existing_id}). Use a new key for a new bulletin.",
        bulletin_id=existing_id,
    )


def replay(session: Session, agency_id: int, key: str, digest: str) -> Bulletin | None:
    """The bulletin an earlier request with this key made, if any (409 if it differs)."""
    existing = session.scalar(
        select(Bulletin).where(Bulletin.agency_id == agency_id, Bulletin.idempotency_key == key)
    )
    if existing is not None and existing.request_hash != digest:
        raise key_conflict(key, existing.id)
    return existing


def key_used(session: Session, agency_id: int, key: str) -> bool:
    """Whether this idempotency key already made one of the agency's bulletins."""
    found = session.scalar(
        select(Bulletin.id).where(Bulletin.agency_id == agency_id, Bulletin.idempotency_key == key)
    )
    return found is not None


def recent_twin(session: Session, agency_id: int, digest: str, since: datetime) -> Bulletin | None:
    """The agency's newest bulletin made from the very same request (`request_hash`) since
    `since` and not withdrawn: what a form sent again with a new key would duplicate."""
    return session.scalar(
        select(Bulletin)
        .where(
            Bulletin.agency_id == agency_id,
            Bulletin.request_hash == digest,
            Bulletin.created_at >= since,
            Bulletin.status != BulletinStatus.WITHDRAWN,
        )
        .order_by(Bulletin.id.desc())
        .limit(1)
    )


# Category name → slug, for categories this process has already made sure exist. Categories
# are never deleted, so a hit skips a slugify and an upsert per bulletin.
_known_categories: dict[str, str] = {}


def _ensure_category(session: Session, name: str | None) -> str | None:
    """The category's slug, creating the category on first use (race-free upsert)."""
    if not name:
        return None
    if (known := _known_categories.get(name)) is not None:
        return known
    slug = slugify(name, fallback="khac")
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Category)
        .values(slug=slug, name=name)
        .on_conflict_do_nothing(index_elements=["slug"])
    )
    # Remembered only once the row is committed: a rolled-back batch must not leave a
    # category we believe exists but does not.
    event.listen(session, "after_commit", lambda _s: _known_categories.__setitem__(name, slug),
                 once=True)  # fmt: skip
    return slug


def _is_embargoed(published_at: datetime, now: datetime) -> bool:
    return published_at > now


def render_body(settings: Settings, bulletin_in: BulletinCreate) -> str:
    """The body as safe HTML. Costly (up to seconds for the largest bodies), so it runs in
    the request's own thread before anything is stored: never in the writer thread every
    agency's submissions share, nor inside a transaction."""
    if (
        bulletin_in.body_format == BodyFormat.HTML
        and (depth := nesting_depth(bulletin_in.body)) > MAX_NESTING
    ):
        raise Problem(
            422, "Invalid bulletin",
            f"body: elements nest {depth} deep; at most {MAX_NESTING} are allowed",
            errors=[{"field": "body", "message": f"elements must not nest more than "
                     f"{MAX_NESTING} deep (they nest {depth} deep)"}],
        )  # fmt: skip
    return body_to_html(bulletin_in.body, bulletin_in.body_format, base_url=settings.public_url)


def _content(
    session: Session, bulletin_in: BulletinCreate, body_html: str,
    published_at: datetime | None, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """The columns a submission or a correction sets (a new revision starts its attempts)."""
    return {
        "title": bulletin_in.title,
        "title_folded": fold(bulletin_in.title),  # the console's title search
        "summary": bulletin_in.summary,
        "body_format": bulletin_in.body_format,
        "body_source": bulletin_in.body,
        "body_html": body_html,
        "author": bulletin_in.author,
        "category": bulletin_in.category,
        "category_slug": _ensure_category(session, bulletin_in.category),
        "language": bulletin_in.language,
        "published_at": bulletin_in.published_at or published_at or now,
        "content_hash": request_hash(bulletin_in),
        "updated_at": now,
        "attempts": 0,
        "last_error": None,
    }


def new_bulletin_values(
    session: Session, *, agency_id: int, bulletin_in: BulletinCreate, body_html: str,
    idempotency_key: str | None, now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """The columns of a new bulletin: queued for rendering, or scheduled when embargoed.
    Every row gets the same keys, so a group of them inserts as one executemany."""
    values = _content(session, bulletin_in, body_html, None, now)
    embargoed = _is_embargoed(values["published_at"], now)
    return {
        "agency_id": agency_id,
        "slug": slugify(bulletin_in.title),
        "idempotency_key": idempotency_key,
        "request_hash": values["content_hash"],
        "created_at": now,
        "status": BulletinStatus.SCHEDULED if embargoed else BulletinStatus.QUEUED,
        "pending_since": None if embargoed else now,
        **values,
    }


def owned_bulletin(
    session: Session, agency_id: int, bulletin_id: int, options: Sequence[Any] = ()
) -> Bulletin:
    """The agency's bulletin (`options`: loader options, e.g. to leave the body unloaded)."""
    # Ids past the column's range cannot exist (and SQLite cannot even bind them).
    bulletin = (
        session.get(Bulletin, bulletin_id, options=options) if 0 < bulletin_id <= MAX_ID else None
    )
    if bulletin is None or bulletin.agency_id != agency_id:
        # Another agency's bulletin is reported as missing: ids reveal nothing.
        raise Problem(404, "Not found", f"No bulletin {bulletin_id} for this agency.")
    return bulletin


def cited_documents(session: Session, bulletin: Bulletin) -> list[LegalDocument]:
    """The documents the bulletin's live page cites, in order of first mention: the citation
    rows of its live revision (none before its first render, none once withdrawn)."""
    if bulletin.cited_revision is None or bulletin.status == BulletinStatus.WITHDRAWN:
        return []
    query = (
        select(LegalDocument)
        .join(Citation, Citation.document_key == LegalDocument.key)
        .where(
            Citation.bulletin_id == bulletin.id,
            Citation.revision == bulletin.cited_revision,
        )
        .order_by(Citation.position)
    )
    return list(session.scalars(query))


def etag(revision: int) -> str:
    """The strong entity tag of a bulletin's revision: what `If-Match` is compared with."""
    return f'"r{revision}"'


def matches(if_match: str | None, revision: int) -> bool:
    """RFC 9110 If-Match: absent, `*`, or a list holding this revision's tag."""
    if if_match is None:
        return True
    tags = {tag.strip() for tag in if_match.split(",")}
    return "*" in tags or etag(revision) in tags


@dataclass(frozen=True)
class Change:
    """What a change came to: the bulletin as it now is, and what follows from it."""

    bulletin: Bulletin
    changed: bool  # False: nothing to do (a repeat of the current content, a repeat withdrawal)
    left: list[Listing]  # listings the bulletin left (to refresh them)


Decision = tuple[dict[str, Any], list[Listing]] | None


def _change(
    session: Session, *, agency_id: int, bulletin_id: int, if_match: str | None,
    decide: Callable[[Bulletin, datetime], Decision],
) -> Change:  # fmt: skip
    """Read, decide, compare-and-set; again from the fresh row whenever another change won."""
    for _ in range(MAX_CHANGE_ATTEMPTS):
        session.expire_all()  # read what is committed now, not what this session saw before
        bulletin = owned_bulletin(session, agency_id, bulletin_id)
        if not matches(if_match, bulletin.revision):
            raise Problem(
                412, "Precondition failed",
                f"Bulletin {bulletin_id} is at revision {bulletin.revision} "
                f"(ETag {etag(bulletin.revision)}), not the one If-Match names: read it again.",
                revision=bulletin.revision,
                headers={"ETag": etag(bulletin.revision)},
            )  # fmt: skip
        decision = decide(bulletin, utcnow())
        if decision is None:
            session.rollback()
            return Change(bulletin, changed=False, left=[])
        values, left = decision
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Bulletin)
            .where(
                Bulletin.id == bulletin.id,
                Bulletin.revision == bulletin.revision,
                Bulletin.rendered_revision == bulletin.rendered_revision,
                Bulletin.status == bulletin.status,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            session.commit()
            # What this change wrote, not a re-read: another change may already follow it.
            for column, value in values.items():
                set_committed_value(bulletin, column, value)
            return Change(bulletin, changed=True, left=left)
        session.rollback()  # someone else's change committed first: decide again
    raise Problem(
        503, "Service unavailable",
        f"Bulletin {bulletin_id} is changing too fast to apply this change; retry.",
    )  # fmt: skip


def update_bulletin(
    *, session: Session, settings: Settings, agency_id: int, bulletin_id: int,
    bulletin_in: BulletinCreate, if_match: str | None = None, body_html: str | None = None,
) -> Change:  # fmt: skip
    """Store a correction as a new revision. `body_html`: the body already rendered by
    render_body (the console renders it to validate the form; rendering is costly)."""
    if body_html is None:
        body_html = render_body(settings, bulletin_in)  # once, before any transaction

    def decide(bulletin: Bulletin, now: datetime) -> Decision:
        if bulletin.status == BulletinStatus.WITHDRAWN:
            raise Problem(409, "Bulletin withdrawn", f"Bulletin {bulletin.id} was withdrawn; "
                          "submit a new bulletin instead.")  # fmt: skip
        if bulletin.content_hash == request_hash(bulletin_in):
            return None  # nothing changed: no new revision, nothing to render
        was_public = bulletin.status == BulletinStatus.PUBLISHED or bulletin.rendered_revision > 0
        wanted = bulletin_in.published_at
        if was_public and wanted is not None and _is_embargoed(wanted, now):
            raise Problem(
                422, "Invalid bulletin",
                "published_at: a published bulletin cannot be embargoed again; withdraw it "
                "instead",
                errors=[{"field": "published_at", "message": "must not be in the future for a "
                         "bulletin that is already public"}],
            )  # fmt: skip
        values = _content(session, bulletin_in, body_html, bulletin.published_at, now)
        values["revision"] = bulletin.revision + 1
        # Once public, never scheduled again (a kept date that looks future on a host whose
        # clock runs behind included).
        if _is_embargoed(values["published_at"], now) and not was_public:
            values["status"], values["pending_since"] = BulletinStatus.SCHEDULED, None
        else:
            values["status"] = BulletinStatus.PUBLISHED if was_public else BulletinStatus.QUEUED
            values["pending_since"] = now
        old, new = bulletin.category_slug, values["category_slug"]
        left = [Listing(ListingKind.CATEGORY, old)] if old and old != new else []
        return values, left

    return _change(session, agency_id=agency_id, bulletin_id=bulletin_id, if_match=if_match,
                   decide=decide)  # fmt: skip


def withdrawal_notice(notice: str | None) -> str | None:
    """The public notice as stored: cleaned (NFC), stripped, None when blank; longer than
    WITHDRAWAL_NOTICE_MAX is a 422."""
    cleaned = clean_text(notice).strip() if notice is not None else ""
    if len(cleaned) > WITHDRAWAL_NOTICE_MAX:
        message = f"must be at most {WITHDRAWAL_NOTICE_MAX} characters (it has {len(cleaned)})"
        raise Problem(422, "Invalid withdrawal", f"notice: {message}",
                      errors=[{"field": "notice", "message": message}])  # fmt: skip
    return cleaned or None


def withdraw_bulletin(
    *, session: Session, agency_id: int, bulletin_id: int, if_match: str | None = None,
    notice: str | None = None,
) -> Change:  # fmt: skip
    """Withdraw (idempotent): a new revision whose render turns the page into a tombstone,
    showing `notice` (the agency's public notice, plain text) when given. Withdrawing again
    changes nothing, the notice included."""
    stored_notice = withdrawal_notice(notice)

    def decide(bulletin: Bulletin, now: datetime) -> Decision:
        if bulletin.status == BulletinStatus.WITHDRAWN:
            return None
        values: dict[str, Any] = {
            "revision": bulletin.revision + 1,
            "status": BulletinStatus.WITHDRAWN,
            "withdrawal_notice": stored_notice,
            "updated_at": now,
            "attempts": 0,
            "last_error": None,
        }
        if bulletin.rendered_revision == 0 and bulletin.status != BulletinStatus.PUBLISHED:
            # Never public: nothing to take down, and no tombstone to reveal it existed. (A
            # published row the reconciler is re-rendering has rendered_revision 0 too.)
            values["rendered_revision"], values["pending_since"] = values["revision"], None
        else:
            values["pending_since"] = now
        return values, []

    return _change(session, agency_id=agency_id, bulletin_id=bulletin_id, if_match=if_match,
                   decide=decide)  # fmt: skip


def enqueue_render(celery: Celery, bulletin: Bulletin) -> None:
    """Best effort: the row is committed, so if Redis is unreachable the reconciler re-sends."""
    if bulletin.pending_since is None:
        return
    try:
        celery.send_task(RENDER_BULLETIN, args=[bulletin.id, bulletin.revision])
    except Exception:
        log.warning("could not queue bulletin %s; the reconciler will re-send it", bulletin.id,
                    exc_info=True)  # fmt: skip


def refresh_listings(refresher: Refresher, listings: list[Listing]) -> None:
    """Best effort: a listing left stale is found by the reconciler's verification.

    With each listing's page and feeds goes its archive check, which finds the month the
    bulletin left (the render worker only knows the listings the bulletin is in now)."""
    wanted = [(job, listing) for listing in listings for job in Job]
    wanted += [(Job.FEED, archive(listing, ARCHIVE_CHECK)) for listing in listings]
    try:
        refresher.request_many(wanted)
    except Exception:
        log.warning("could not request a refresh of %s; the reconciler will",
                    [listing.target for listing in listings], exc_info=True)  # fmt: skip


# -- the sequences the API and the console both run for a change --


def log_accepted(agency_slug: str, accepted: Accepted) -> None:
    outcome = "created" if accepted.created else "replayed"
    ACCEPTED.labels(outcome).inc()
    events.info("bulletin %s %s (%s)", accepted.id, outcome, accepted.status,
             extra=bulletin_fields(accepted.id, agency_slug, accepted.revision))  # fmt: skip


def log_change(kind: str, agency_slug: str, change: Change) -> None:
    """One event per correction or withdrawal, whether it changed anything or not."""
    outcome = "changed" if change.changed else "unchanged"
    (CORRECTIONS if kind == "correction" else WITHDRAWALS).labels(outcome).inc()
    bulletin = change.bulletin
    events.info("bulletin %s %s %s (%s)", bulletin.id, kind, outcome, bulletin.status,
             extra=bulletin_fields(bulletin.id, agency_slug, bulletin.revision))  # fmt: skip


def correct_and_queue(
    *, session: Session, settings: Settings, celery: Celery, refresher: Refresher | None,
    agency_id: int, agency_slug: str, bulletin_id: int, bulletin_in: BulletinCreate,
    if_match: str | None = None, body_html: str | None = None,
) -> Change:  # fmt: skip
    """A correction as PUT /v1/bulletins/{id} makes it: stored, logged, its render queued,
    and the listings it left refreshed."""
    change = update_bulletin(
        session=session, settings=settings, agency_id=agency_id, bulletin_id=bulletin_id,
        bulletin_in=bulletin_in, if_match=if_match, body_html=body_html,
    )  # fmt: skip
    log_change("correction", agency_slug, change)
    if change.changed:
        enqueue_render(celery, change.bulletin)
    if change.left and refresher is not None:
        refresh_listings(refresher, change.left)
    return change


def withdraw_and_queue(
    *, session: Session, celery: Celery, agency_id: int, agency_slug: str, bulletin_id: int,
    if_match: str | None = None, notice: str | None = None,
) -> Change:  # fmt: skip
    """A withdrawal as DELETE /v1/bulletins/{id} makes it: stored, logged, its render queued."""
    change = withdraw_bulletin(session=session, agency_id=agency_id, bulletin_id=bulletin_id,
                               if_match=if_match, notice=notice)  # fmt: skip
    log_change("withdrawal", agency_slug, change)
    if change.changed:
        enqueue_render(celery, change.bulletin)
    return change
