"""Accepting a bulletin: one committed row, then a best-effort message to the render queue."""

from __future__ import annotations

import hashlib
import logging

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest.problems import Problem
from services.ingest.schemas import BulletinCreate
from shared.celery_app import RENDER_BULLETIN
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.sanitize import body_to_html
from shared.settings import Settings
from shared.slug import slugify

log = logging.getLogger(__name__)


def request_hash(bulletin_in: BulletinCreate) -> str:
    """A digest of the validated request, so JSON spacing or key order never looks like a change."""
    return hashlib.sha256(bulletin_in.model_dump_json().encode()).hexdigest()


def _replay(session: Session, agency: Agency, key: str, digest: str) -> Bulletin | None:
    existing = session.scalar(
        select(Bulletin).where(Bulletin.agency_id == agency.id, Bulletin.idempotency_key == key)
    )
    if existing is not None and existing.request_hash != digest:
        raise Problem(
            409,
            "Idempotency key reused",
            f"The Idempotency-Key {key!r} was already used for a different bulletin "
            f"(id {existing.id}). Use a new key for a new bulletin.",
            bulletin_id=existing.id,
        )
    return existing


def create_bulletin(
    *,
    session: Session,
    settings: Settings,
    agency: Agency,
    bulletin_in: BulletinCreate,
    idempotency_key: str | None,
) -> tuple[Bulletin, bool]:
    """Store a new bulletin (or find the one this idempotent request made); True if new."""
    digest = request_hash(bulletin_in)
    if idempotency_key and (found := _replay(session, agency, idempotency_key, digest)):
        return found, False
    now = utcnow()
    bulletin = Bulletin(
        agency_id=agency.id,
        slug=slugify(bulletin_in.title),
        title=bulletin_in.title,
        summary=bulletin_in.summary,
        body_format=bulletin_in.body_format,
        body_source=bulletin_in.body,
        body_html=body_to_html(
            bulletin_in.body, bulletin_in.body_format, base_url=settings.public_url
        ),
        author=bulletin_in.author,
        category=bulletin_in.category,
        category_slug=slugify(bulletin_in.category, fallback="khac")
        if bulletin_in.category
        else None,
        language=bulletin_in.language,
        published_at=bulletin_in.published_at or now,
        status=BulletinStatus.QUEUED,
        idempotency_key=idempotency_key,
        request_hash=digest,
        created_at=now,
        updated_at=now,
        queued_at=now,
    )
    session.add(bulletin)
    try:
        session.commit()
    except IntegrityError:
        # Two requests with one key raced past the lookup: the loser answers with the winner's.
        session.rollback()
        if idempotency_key and (found := _replay(session, agency, idempotency_key, digest)):
            return found, False
        raise
    return bulletin, True


def enqueue_render(celery: Celery, bulletin: Bulletin) -> None:
    """Best effort: the row is committed, so if Redis is unreachable the reconciler re-sends."""
    try:
        celery.send_task(RENDER_BULLETIN, args=[bulletin.id, bulletin.revision])
    except Exception:
        log.warning(
            "could not queue bulletin %s; the reconciler will re-send it",
            bulletin.id,
            exc_info=True,
        )
