"""The agency's bulletins: the list and its search, one bulletin and its live status, and
withdrawal (through service.withdraw_and_queue, the API's own sequence)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, defer
from starlette.concurrency import run_in_threadpool

from services.ingest import service
from services.ingest.console import auth
from services.ingest.console.pages import (
    ConsoleError,
    check_csrf,
    current_viewer,
    in_session,
    local_iso,
    local_text,
    may_write,
    not_found,
    page,
    problem_page,
    read_form,
    require_viewer,
    see_other,
    settings_of,
)
from services.ingest.problems import Problem
from services.ingest.schemas import WITHDRAWAL_NOTICE_MAX
from shared.models import (
    Bulletin,
    BulletinStatus,
)
from shared.sanitize import clean_text
from shared.settings import Settings
from shared.site import absolute, article_path
from shared.slug import fold

PAGE_SIZE = 20
MAX_QUERY = 200
FOLD_BATCH = 500  # titles folded per search, at most (see _fold_missing)

router = APIRouter(prefix="/console", include_in_schema=False)


# -- the list --


@dataclass(frozen=True)
class State:
    """What the console says of a bulletin's state."""

    status: str
    label: str
    online: bool  # its public page shows it (perhaps an older revision)
    settled: bool  # nothing more will happen by itself (no need to poll)
    url: str

    def document(self) -> dict[str, Any]:
        return {"status": self.status, "label": self.label, "online": self.online,
                "settled": self.settled, "url": self.url}  # fmt: skip


def state_of(bulletin: Bulletin, settings: Settings, *, short: bool = False) -> State:
    url = absolute(settings.public_url,
                   article_path(bulletin.agency.slug, bulletin.slug, bulletin.id))  # fmt: skip
    status = bulletin.status
    current = bulletin.rendered_revision >= bulletin.revision
    if status == BulletinStatus.SCHEDULED:
        label = (
            "Đã lên lịch"
            if short
            else (f"Đã lên lịch đăng lúc {local_text(bulletin.published_at, settings)}")
        )
        return State(status, label, False, True, url)
    if status == BulletinStatus.PUBLISHED:
        if current:
            return State(status, "Đã đăng", True, True, url)
        return State(status, "Đang cập nhật bản sửa (trang vẫn hiện bản trước)", True, False, url)
    if status == BulletinStatus.WITHDRAWN:
        if current:
            return State(status, "Đã gỡ", False, True, url)
        return State(status, "Đang gỡ", bulletin.rendered_revision > 0, False, url)
    if status == BulletinStatus.FAILED:
        error = bulletin.last_error or "không rõ nguyên nhân"
        return State(status, f"Lỗi: {error}", False, True, url)  # the list says why too
    return State(status, "Đang xử lý", False, False, url)


@dataclass(frozen=True)
class Row:
    id: int
    title: str
    status: str
    label: str
    published: str
    published_iso: str


# The list and the status poll show no body: never load it (up to ~1 MB each, twice).
WITHOUT_BODY = (defer(Bulletin.body_source), defer(Bulletin.body_html))


def _fold_missing(session: Session, agency_id: int) -> None:
    """Fold the titles that a process older than the title_folded column wrote without it
    (during an upgrade), a bounded batch per search: idempotent, so races are harmless."""
    missing = session.execute(
        select(Bulletin.id, Bulletin.title)
        .where(Bulletin.agency_id == agency_id, Bulletin.title_folded.is_(None))
        .limit(FOLD_BATCH)
    ).all()
    for bulletin_id, title in missing:
        session.execute(
            update(Bulletin)
            .where(Bulletin.id == bulletin_id, Bulletin.title_folded.is_(None))
            .values(title_folded=fold(title))
            .execution_options(synchronize_session=False)
        )


def _rows(session: Session, settings: Settings, agency_id: int, q: str, page_no: int) -> list[Row]:
    query = select(Bulletin).options(*WITHOUT_BODY).where(Bulletin.agency_id == agency_id)
    folded = fold(q)
    if folded:
        _fold_missing(session, agency_id)
        # A row written by a process older than the folded column has none: its lowercased
        # title still matches a query typed with the same diacritics.
        query = query.where(
            or_(
                Bulletin.title_folded.contains(folded, autoescape=True),
                and_(
                    Bulletin.title_folded.is_(None),
                    func.lower(Bulletin.title).contains(q.lower(), autoescape=True)
                    | func.lower(Bulletin.title).contains(folded, autoescape=True),
                ),
            )
        )
    query = query.order_by(Bulletin.id.desc()).offset((page_no - 1) * PAGE_SIZE)
    return [
        Row(b.id, b.title, b.status, state_of(b, settings, short=True).label,
            local_text(b.published_at, settings), local_iso(b.published_at, settings))
        for b in session.scalars(query.limit(PAGE_SIZE + 1))
    ]  # fmt: skip


def _page_number(value: str | None) -> int:
    # ASCII digits only: str.isdigit() takes "²", which int() refuses.
    if value and re.fullmatch(r"[0-9]{1,9}", value):
        return max(1, int(value))
    return 1


def _list_url(q: str, page_no: int) -> str:
    params = {"q": q} if q else {}
    if page_no > 1:
        params["page"] = str(page_no)
    return "/console/bulletins" + ("?" + urlencode(params) if params else "")


@router.get("/bulletins")
async def bulletin_list(request: Request) -> Response:
    viewer = await require_viewer(request)
    settings = settings_of(request)
    q = (request.query_params.get("q") or "").strip()[:MAX_QUERY]
    page_no = _page_number(request.query_params.get("page"))
    rows = await run_in_threadpool(
        in_session, settings, lambda s: _rows(s, settings, viewer.agency_id, q, page_no)
    )
    more = len(rows) > PAGE_SIZE
    return page(
        request, "list.html", viewer=viewer, q=q, page=page_no, rows=rows[:PAGE_SIZE],
        first_url=_list_url(q, 1),
        previous_url=_list_url(q, page_no - 1) if page_no > 1 else None,
        next_url=_list_url(q, page_no + 1) if more else None,
    )  # fmt: skip


# -- one bulletin --


def owned(
    session: Session, viewer: auth.Viewer, bulletin_id: int, options: tuple[Any, ...] = ()
) -> Bulletin:
    """The viewer's agency's bulletin (the API's own check), or the console's 404."""
    try:
        return service.owned_bulletin(session, viewer.agency_id, bulletin_id, options)
    except Problem as problem:
        raise not_found() from problem


@dataclass(frozen=True)
class Shown:
    bulletin: dict[str, Any]
    state: State
    published: str
    published_iso: str
    updated: str
    notice: str | None


def shown_of(session: Session, settings: Settings, viewer: auth.Viewer, bulletin_id: int) -> Shown:
    b = owned(session, viewer, bulletin_id)
    return Shown(
        bulletin={"id": b.id, "title": b.title, "status": b.status, "author": b.author,
                  "category": b.category, "summary": b.summary, "revision": b.revision},
        state=state_of(b, settings),
        published=local_text(b.published_at, settings),
        published_iso=local_iso(b.published_at, settings),
        updated=local_text(b.updated_at, settings),
        notice=b.withdrawal_notice,
    )  # fmt: skip


@router.get("/bulletins/{bulletin_id:int}")
async def bulletin_page(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    settings = settings_of(request)
    shown = await run_in_threadpool(
        in_session, settings, lambda s: shown_of(s, settings, viewer, bulletin_id)
    )
    return page(request, "bulletin.html", viewer=viewer, bulletin=shown.bulletin,
                state=shown.state, published=shown.published,
                published_iso=shown.published_iso, updated=shown.updated,
                notice=shown.notice)  # fmt: skip


@router.get("/bulletins/{bulletin_id:int}/status.json")
async def bulletin_status(request: Request, bulletin_id: int) -> Response:
    viewer = await current_viewer(request)
    if viewer is None:
        return JSONResponse({"error": "signed out"}, status_code=401)
    settings = settings_of(request)
    try:
        state = await run_in_threadpool(
            in_session, settings,
            lambda s: state_of(owned(s, viewer, bulletin_id, WITHOUT_BODY), settings),
        )  # fmt: skip
    except ConsoleError:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(state.document())


# -- withdrawal --


@router.get("/bulletins/{bulletin_id:int}/withdraw")
async def withdraw_form(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    settings = settings_of(request)
    shown = await run_in_threadpool(
        in_session, settings, lambda s: shown_of(s, settings, viewer, bulletin_id)
    )
    if shown.bulletin["status"] == BulletinStatus.WITHDRAWN:
        return see_other(f"/console/bulletins/{bulletin_id}")
    return page(request, "withdraw.html", viewer=viewer, bulletin=shown.bulletin, notice="",
                errors=[])  # fmt: skip


def _withdraw(
    session: Session, request: Request, viewer: auth.Viewer, bulletin_id: int, notice: str
) -> None:
    """DELETE /v1/bulletins/{id} with its notice: the API's own sequence."""
    service.withdraw_and_queue(
        session=session, celery=request.app.state.celery, agency_id=viewer.agency_id,
        agency_slug=viewer.agency_slug, bulletin_id=bulletin_id, notice=notice,
    )  # fmt: skip


@router.post("/bulletins/{bulletin_id:int}/withdraw")
async def withdraw_submit(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    data = await read_form(request)
    check_csrf(viewer, data)
    settings = settings_of(request)
    notice = str(data.get("notice") or "")
    try:
        service.withdrawal_notice(notice)  # the service's own check, before any budget is spent
        await may_write(request, viewer)
        await run_in_threadpool(
            in_session, settings, lambda s: _withdraw(s, request, viewer, bulletin_id, notice)
        )
    except Problem as problem:
        if problem.status == 404:
            raise not_found() from problem
        # The confirmation again, with what went wrong and the notice as typed.
        shown = await run_in_threadpool(
            in_session, settings, lambda s: shown_of(s, settings, viewer, bulletin_id)
        )
        error = problem_page(problem)
        message = error.message
        if problem.status == 422:
            length = len(clean_text(notice).strip())
            message = (f"Thông báo dài quá: tối đa {WITHDRAWAL_NOTICE_MAX} ký tự (hiện có "
                       f"{length}).")  # fmt: skip
        return page(request, "withdraw.html", status=error.status, viewer=viewer,
                    bulletin=shown.bulletin, notice=notice, errors=[message],
                    headers=error.headers)  # fmt: skip
    return see_other(f"/console/bulletins/{bulletin_id}")
