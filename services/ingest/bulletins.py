"""The bulletins resource: submit one, read its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from services.ingest import service
from services.ingest.deps import AgencyDep, SessionDep, SettingsDep
from services.ingest.problems import Problem
from services.ingest.schemas import BulletinAccepted, BulletinCreate, BulletinPublic
from shared.models import Bulletin
from shared.site import absolute, article_path

router = APIRouter(prefix="/v1/bulletins", tags=["bulletins"])

PROBLEMS = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        404: "No such bulletin for this agency",
        409: "Idempotency-Key reused with a different body",
        413: "Request body over the size limit",
        422: "Invalid fields (each listed with the reason)",
        503: "Database or queue unavailable; retry after `Retry-After` seconds",
    }.items()
}


def _url(settings: SettingsDep, bulletin: Bulletin) -> str:
    return absolute(
        settings.public_url, article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=PROBLEMS,  # type: ignore[arg-type]
    summary="Submit a bulletin for publishing",
)
def submit_bulletin(
    bulletin_in: BulletinCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: AgencyDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> BulletinAccepted:
    """Accepted bulletins are rendered and in the feeds within about a second.

    Send an `Idempotency-Key` to retry safely: the same key with the same body returns the
    original bulletin; with a different body it is a `409`.
    """
    bulletin, created = service.create_bulletin(
        session=session,
        settings=settings,
        agency=agency,
        bulletin_in=bulletin_in,
        idempotency_key=idempotency_key,
    )
    if created:
        service.enqueue_render(request.app.state.celery, bulletin)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    status_url = str(request.url_for("get_bulletin", bulletin_id=bulletin.id))
    response.headers["Location"] = status_url
    return BulletinAccepted(
        id=bulletin.id,
        status=bulletin.status,
        revision=bulletin.revision,
        url=_url(settings, bulletin),
        status_url=status_url,
    )


@router.get(
    "/{bulletin_id}",
    response_model=BulletinPublic,
    responses=PROBLEMS,  # type: ignore[arg-type]
    summary="Read a bulletin and its publishing status",
)
def get_bulletin(
    bulletin_id: int, session: SessionDep, settings: SettingsDep, agency: AgencyDep
) -> BulletinPublic:
    bulletin = session.get(Bulletin, bulletin_id)
    if bulletin is None or bulletin.agency_id != agency.id:
        # Another agency's bulletin is reported as missing: ids reveal nothing.
        raise Problem(404, "Not found", f"No bulletin {bulletin_id} for this agency.")
    return BulletinPublic(
        id=bulletin.id,
        guid=bulletin.guid,
        status=bulletin.status,
        revision=bulletin.revision,
        url=_url(settings, bulletin),
        title=bulletin.title,
        summary=bulletin.summary,
        body=bulletin.body_source,
        body_format=bulletin.body_format,
        body_html=bulletin.body_html,
        author=bulletin.author,
        category=bulletin.category,
        language=bulletin.language,
        published_at=bulletin.published_at,
        created_at=bulletin.created_at,
        updated_at=bulletin.updated_at,
        rendered_at=bulletin.rendered_at,
        last_error=bulletin.last_error,
    )
