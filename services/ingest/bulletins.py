"""The bulletins resource: submit, read, correct, withdraw."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status

from services.ingest import service
from services.ingest.deps import AgencyDep, QueueDep, SessionDep, SettingsDep
from services.ingest.schemas import BulletinAccepted, BulletinCreate, BulletinPublic
from shared.models import Bulletin
from shared.settings import Settings
from shared.site import absolute, article_path

router = APIRouter(prefix="/v1/bulletins", tags=["bulletins"])

PROBLEMS = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or invalid API key",
        404: "No such bulletin for this agency",
        409: "Idempotency-Key reused with a different body, or the bulletin was withdrawn",
        413: "Request body over the size limit",
        422: "Invalid fields (each listed with the reason)",
        503: "Database or queue unavailable; nothing was stored; retry after `Retry-After`",
    }.items()
}


def _url(settings: Settings, bulletin: Bulletin) -> str:
    return absolute(
        settings.public_url, article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    )


def _accepted(request: Request, response: Response, settings: Settings,
              bulletin: Bulletin) -> BulletinAccepted:  # fmt: skip
    status_url = str(request.url_for("get_bulletin", bulletin_id=bulletin.id))
    response.headers["Location"] = status_url
    return BulletinAccepted(
        id=bulletin.id,
        status=bulletin.status,
        revision=bulletin.revision,
        url=_url(settings, bulletin),
        status_url=status_url,
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
    _queue: QueueDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> BulletinAccepted:
    """Accepted bulletins are rendered and in the feeds within about a second; with a
    `published_at` in the future the bulletin is `scheduled` (embargoed) until then.

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
    return _accepted(request, response, settings, bulletin)


@router.get(
    "/{bulletin_id}",
    response_model=BulletinPublic,
    responses=PROBLEMS,  # type: ignore[arg-type]
    summary="Read a bulletin and its publishing status",
)
def get_bulletin(
    bulletin_id: int, session: SessionDep, settings: SettingsDep, agency: AgencyDep
) -> BulletinPublic:
    bulletin = service.owned_bulletin(session, agency, bulletin_id)
    return BulletinPublic(
        id=bulletin.id,
        guid=bulletin.guid,
        status=bulletin.status,
        revision=bulletin.revision,
        rendered_revision=bulletin.rendered_revision,
        attempts=bulletin.attempts,
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


@router.put(
    "/{bulletin_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=PROBLEMS,  # type: ignore[arg-type]
    summary="Correct a bulletin (a new revision replaces every field)",
)
def correct_bulletin(
    bulletin_id: int,
    bulletin_in: BulletinCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: AgencyDep,
    _queue: QueueDep,
) -> BulletinAccepted:
    """The page is re-rendered and the feeds show the new content under the same guid, with
    a new `updated` date. The URL never changes. Sending the current content again creates
    no revision; leaving out `published_at` keeps the current one."""
    bulletin = service.owned_bulletin(session, agency, bulletin_id)
    left = service.update_bulletin(
        session=session, settings=settings, bulletin=bulletin, bulletin_in=bulletin_in
    )
    service.enqueue_render(request.app.state.celery, bulletin)
    if left and request.app.state.refresher is not None:
        service.refresh_listings(request.app.state.refresher, left)
    return _accepted(request, response, settings, bulletin)


@router.delete(
    "/{bulletin_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=PROBLEMS,  # type: ignore[arg-type]
    summary="Withdraw a bulletin",
)
def withdraw_bulletin(
    bulletin_id: int,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: AgencyDep,
    _queue: QueueDep,
) -> BulletinAccepted:
    """Its page then answers `410 Gone` and it leaves every feed and index page. Withdrawing
    again changes nothing."""
    bulletin = service.owned_bulletin(session, agency, bulletin_id)
    if service.withdraw_bulletin(session=session, bulletin=bulletin):
        service.enqueue_render(request.app.state.celery, bulletin)
    return _accepted(request, response, settings, bulletin)
