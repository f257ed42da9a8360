"""The bulletins resource: submit, read, correct, withdraw."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from services.ingest import service
from services.ingest.deps import AgencyDep, SessionDep, SettingsDep, WritingAgencyDep
from services.ingest.metrics import REJECTED, status_class
from services.ingest.problems import Problem, item_problem, problem_responses
from services.ingest.schemas import (
    BatchItem,
    BatchItemResult,
    BatchResult,
    BatchSubmission,
    BulletinAccepted,
    BulletinCreate,
    BulletinPublic,
    CitationPublic,
    IdempotencyKey,
    Withdrawal,
)
from services.ingest.writer import Accepted, GroupWriter
from shared.models import Bulletin
from shared.settings import Settings
from shared.site import absolute, article_path, document

log = logging.getLogger(__name__)
# Bodies up to this long are made safe on the event loop (tens of µs): handing them to a
# thread cost more than the work. Longer ones, up to seconds of work, go to a thread.
INLINE_BODY_CHARS = 4096

router = APIRouter(prefix="/v1/bulletins", tags=["bulletins"])

IdempotencyKeyHeader = Annotated[
    IdempotencyKey | None,
    Header(description="1 to 200 visible ASCII characters; repeat it to retry safely."),
]
IfMatchHeader = Annotated[
    str | None,
    Header(description="The `ETag` of the revision this change was made against (or `*`): "
           "a bulletin changed since answers `412`."),
]  # fmt: skip

# The headers of the answers that name a bulletin's revision.
_ETAG = {
    "description": "The revision's entity tag: send it as `If-Match` to change this revision.",
    "required": True,
    "schema": {"type": "string", "pattern": '^"r[0-9]+"$'},
}
_LOCATION = {
    "description": "The bulletin's status URL (`status_url`).",
    "required": True,
    "schema": {"type": "string", "format": "uri"},
}
_REPLAYED = {
    "description": "`true` when an `Idempotency-Key` replay returned the original bulletin.",
    "schema": {"type": "string", "enum": ["true"]},
}


def _responses(
    success: int,
    headers: dict[str, Any],
    problems: tuple[int, ...],
    meaning: dict[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The headers of the success answer, and the problems the operation can answer."""
    return {success: {"headers": headers}, **problem_responses(problems, meaning)}


def _url(settings: Settings, bulletin: Bulletin) -> str:
    return absolute(
        settings.public_url, article_path(bulletin.agency.slug, bulletin.slug, bulletin.id)
    )


def _changed(response: Response, settings: Settings, change: service.Change) -> BulletinAccepted:
    bulletin = change.bulletin
    stored = Accepted(bulletin.id, bulletin.status, bulletin.revision, bulletin.slug, False)
    answer = _answer(settings, bulletin.agency.slug, stored)
    response.headers["Location"] = answer.status_url
    response.headers["ETag"] = service.etag(bulletin.revision)
    return answer


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=_responses(
        202,
        {"Location": _LOCATION, "ETag": _ETAG, "Idempotent-Replayed": _REPLAYED},
        (400, 401, 403, 409, 413, 415, 422, 429, 503),
        meaning={409: "This `Idempotency-Key` was used with a different body"},
    ),
    summary="Submit a bulletin for publishing",
)
async def submit_bulletin(
    bulletin_in: BulletinCreate,
    request: Request,
    agency: WritingAgencyDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    """Accepted bulletins are rendered and in the feeds within about a second; with a
    `published_at` in the future the bulletin is `scheduled` (embargoed) until then.

    Send an `Idempotency-Key` to retry safely: the same key with the same body returns the
    original bulletin; with a different body it is a `409`.
    """
    settings: Settings = request.app.state.settings
    writer: GroupWriter = request.app.state.writer
    if len(bulletin_in.body) <= INLINE_BODY_CHARS:
        body_html = service.render_body(settings, bulletin_in)
    else:
        body_html = await run_in_threadpool(service.render_body, settings, bulletin_in)
    accepted = await asyncio.wrap_future(
        writer.submit(agency.id, bulletin_in, body_html, idempotency_key)
    )
    service.log_accepted(agency.slug, accepted)
    return _accepted_response(settings, agency.slug, accepted)


def _accepted_response(settings: Settings, agency_slug: str, accepted: Accepted) -> Response:
    """The 202, serialised here: the same JSON FastAPI makes from `BulletinAccepted` (compact,
    UTF-8, fields in order) without validating again what this code just built."""
    status_url = f"{settings.resolved_ingest_url}{router.prefix}/{accepted.id}"
    document = {
        "id": accepted.id,
        "status": accepted.status,
        "revision": accepted.revision,
        "url": absolute(settings.public_url, article_path(agency_slug, accepted.slug, accepted.id)),
        "status_url": status_url,
    }
    headers = {"Location": status_url, "ETag": service.etag(accepted.revision)}
    if not accepted.created:
        headers["Idempotent-Replayed"] = "true"
    content = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status.HTTP_202_ACCEPTED, headers, "application/json")


@router.post(
    ":batch",
    response_model=BatchResult,
    responses=problem_responses((400, 401, 403, 413, 415, 422, 429, 503)),
    summary="Submit up to 100 bulletins at once, each with its own result",
)
async def submit_batch(
    batch: BatchSubmission,
    request: Request,
    settings: SettingsDep,
    agency: WritingAgencyDep,
) -> BatchResult:
    """Each item is validated and stored on its own: one invalid item gets its own `422`
    result and the others are still accepted. Every item reported `202` is stored, and no
    other is (an item the database could not take reports its own `503`). Give each item an
    `idempotency_key` to make a retried batch safe."""
    writer: GroupWriter = request.app.state.writer
    results: list[BatchItemResult | None] = [None] * len(batch.bulletins)
    valid: list[tuple[int, BulletinCreate, str | None]] = []
    for index, raw in enumerate(batch.bulletins):
        try:
            item = BatchItem.model_validate(raw)
        except ValidationError as exc:
            results[index] = BatchItemResult(index=index, status=422, problem=item_problem(exc))
            REJECTED.labels(status_class(422)).inc()
            continue
        # Already validated: construct, so the content digest ignores the key as it does
        # for single submissions.
        bulletin_in = BulletinCreate.model_construct(**item.model_dump(exclude={"idempotency_key"}))
        valid.append((index, bulletin_in, item.idempotency_key))
    bodies = await run_in_threadpool(_render_bodies, settings, [v[1] for v in valid])
    pending: list[tuple[int, asyncio.Future[Accepted]]] = []
    for (index, bulletin_in, key), body_html in zip(valid, bodies, strict=True):
        if isinstance(body_html, Problem):
            results[index] = BatchItemResult(index=index, status=body_html.status,
                                             problem=body_html.document())  # fmt: skip
            REJECTED.labels(status_class(body_html.status)).inc()
            continue
        future = writer.submit(agency.id, bulletin_in, body_html, key)
        pending.append((index, asyncio.wrap_future(future)))
    for index, waiting in pending:
        try:
            accepted = await waiting
        except Problem as problem:
            results[index] = BatchItemResult(index=index, status=problem.status,
                                             problem=problem.document())  # fmt: skip
            REJECTED.labels(status_class(problem.status)).inc()
            if problem.status >= 500:
                log.warning("batch item %d of agency %s refused: %s", index, agency.slug,
                            problem.detail)  # fmt: skip
            continue
        service.log_accepted(agency.slug, accepted)
        results[index] = BatchItemResult(
            index=index, status=202, replayed=not accepted.created,
            bulletin=_answer(settings, agency.slug, accepted),
        )  # fmt: skip
    done = [r for r in results if r is not None]
    return BatchResult(accepted=sum(r.status == 202 for r in done), results=done)


def _render_bodies(settings: Settings, items: list[BulletinCreate]) -> list[str | Problem]:
    """Each item's body as safe HTML, or the problem that refused it."""
    bodies: list[str | Problem] = []
    for bulletin_in in items:
        try:
            bodies.append(service.render_body(settings, bulletin_in))
        except Problem as problem:
            bodies.append(problem)
    return bodies


def _answer(settings: Settings, agency_slug: str, accepted: Accepted) -> BulletinAccepted:
    # Both addresses come from settings: the request's Host header is the client's to choose.
    return BulletinAccepted(
        id=accepted.id,
        status=accepted.status,
        revision=accepted.revision,
        url=absolute(settings.public_url, article_path(agency_slug, accepted.slug, accepted.id)),
        status_url=f"{settings.resolved_ingest_url}{router.prefix}/{accepted.id}",
    )


@router.get(
    "/{bulletin_id}",
    response_model=BulletinPublic,
    responses=_responses(200, {"ETag": _ETAG}, (401, 403, 404, 422, 503)),
    summary="Read a bulletin and its publishing status",
)
def get_bulletin(
    bulletin_id: int,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: AgencyDep,
) -> BulletinPublic:
    """The `ETag` names the current revision: send it back as `If-Match` with a correction or
    a withdrawal to make sure nobody changed the bulletin in between."""
    bulletin = service.owned_bulletin(session, agency.id, bulletin_id)
    response.headers["ETag"] = service.etag(bulletin.revision)
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
        withdrawal_notice=bulletin.withdrawal_notice,
        citations=[
            CitationPublic(
                key=doc.key,
                name=doc.name,
                title=doc.title,
                type=doc.doc_type,
                number=doc.number,
                year=doc.year,
                issuer=doc.issuer,
                issued_on=doc.issued_on,
                url=absolute(settings.public_url, document(doc.key).page_path),
            )
            for doc in service.cited_documents(session, bulletin)
        ],
    )


@router.put(
    "/{bulletin_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=_responses(
        202,
        {"Location": _LOCATION, "ETag": _ETAG},
        (400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 503),
        meaning={409: "The bulletin was withdrawn: it can no longer be corrected"},
    ),
    summary="Correct a bulletin (a new revision replaces every field)",
)
def correct_bulletin(
    bulletin_id: int,
    bulletin_in: BulletinCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: WritingAgencyDep,
    if_match: IfMatchHeader = None,
) -> BulletinAccepted:
    """The page is re-rendered and the feeds show the new content under the same guid, with
    a new `updated` date. The URL never changes. Sending the current content again creates
    no revision; leaving out `published_at` keeps the current one. Simultaneous corrections
    each become their own revision, the last one applied wins; with `If-Match`, a correction
    made against an older revision is refused with `412` instead."""
    state = request.app.state
    change = service.correct_and_queue(
        session=session, settings=settings, celery=state.celery, refresher=state.refresher,
        agency_id=agency.id, agency_slug=agency.slug, bulletin_id=bulletin_id,
        bulletin_in=bulletin_in, if_match=if_match,
    )  # fmt: skip
    return _changed(response, settings, change)


@router.delete(
    "/{bulletin_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BulletinAccepted,
    responses=_responses(
        202,
        {"Location": _LOCATION, "ETag": _ETAG},
        (400, 401, 403, 404, 412, 413, 415, 422, 429, 503),
    ),
    summary="Withdraw a bulletin",
)
def withdraw_bulletin(
    bulletin_id: int,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    agency: WritingAgencyDep,
    if_match: IfMatchHeader = None,
    withdrawal: Withdrawal | None = None,
) -> BulletinAccepted:
    """Its page then answers `410 Gone` and it leaves every feed and index page. The
    optional body's `notice` is shown on that page. Withdrawing again changes nothing."""
    change = service.withdraw_and_queue(
        session=session, celery=request.app.state.celery, agency_id=agency.id,
        agency_slug=agency.slug, bulletin_id=bulletin_id, if_match=if_match,
        notice=None if withdrawal is None else withdrawal.notice,
    )  # fmt: skip
    return _changed(response, settings, change)
