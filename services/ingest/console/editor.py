"""The editor: a new bulletin (preview, publish) and a correction (preview, save).

Publishing goes through the same code as POST /v1/bulletins (render_body, the GroupWriter with
the form's idempotency key, the queue check, the agency's rate limit); a correction through
service.correct_and_queue, guarded by the revision the editor loaded (If-Match).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.ingest import service
from services.ingest.console import auth
from services.ingest.console.bulletins import (
    owned,
)
from services.ingest.console.forms import (
    AT,
    FIELD_IDS,
    FORMAT_CHOICES,
    KEEP,
    NOW,
    BulletinForm,
    FieldErrors,
    to_create,
)
from services.ingest.console.pages import (
    ConsoleError,
    check_csrf,
    in_session,
    local_text,
    may_write,
    page,
    problem_page,
    read_form,
    require_viewer,
    see_other,
    settings_of,
)
from services.ingest.problems import Problem
from services.ingest.schemas import BulletinCreate
from services.render.pages import PageRenderer
from shared import citations
from shared.models import (
    Agency,
    BodyFormat,
    Bulletin,
    BulletinStatus,
    Category,
    utcnow,
)
from shared.settings import Settings
from shared.slug import slugify

MAX_CATEGORIES = 300
CATEGORIES_SECONDS = 10.0
# A new bulletin with the very text of one published this recently is asked about first.
TWIN_WINDOW = timedelta(hours=1)
CONFIRM_FIELD = "publish_again"

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False)


# -- the editor --


@dataclass(frozen=True)
class Editing:
    """An existing bulletin, as the editor needs it."""

    id: int
    title: str
    status: str
    revision: int
    public: bool  # published once: cannot be scheduled again
    published_at: datetime
    guid: str
    slug: str
    body_format: str


def editing_of(b: Bulletin) -> Editing:
    public = b.status == BulletinStatus.PUBLISHED or b.rendered_revision > 0
    return Editing(b.id, b.title, b.status, b.revision, public, b.published_at, b.guid, b.slug,
                   b.body_format)  # fmt: skip


def _categories(session: Session, agency_id: int) -> list[str]:
    """The agency's own categories and those with a published bulletin: never a category
    only another agency's scheduled (embargoed) or withdrawn bulletins use."""
    used = (
        select(Bulletin.id)
        .where(
            Bulletin.category_slug == Category.slug,
            or_(Bulletin.agency_id == agency_id, Bulletin.status == BulletinStatus.PUBLISHED),
        )
        .exists()
    )
    query = select(Category.name).where(used).order_by(Category.name).limit(MAX_CATEGORIES)
    return list(session.scalars(query))


def _formats(editing: Editing | None) -> tuple[str, ...]:
    # An HTML body (from the API) can be corrected as HTML; the console writes text/Markdown,
    # whatever a crafted post says.
    base = tuple(FORMAT_CHOICES)
    html = editing is not None and editing.body_format == BodyFormat.HTML
    return (*base, BodyFormat.HTML.value) if html else base


def editor_page(
    request: Request, viewer: auth.Viewer, form: BulletinForm, *, status: int = 200,
    editing: Editing | None = None, errors: FieldErrors | None = None,
    preview: str | None = None, categories: list[str] | None = None,
    alert: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None,
) -> HTMLResponse:  # fmt: skip
    settings = settings_of(request)
    formats = [(value, label) for value, label in FORMAT_CHOICES.items()]
    if form.body_format == BodyFormat.HTML:
        formats.append((BodyFormat.HTML.value, "HTML (đã làm sạch)"))
    if editing is None:
        when = [(NOW, "Đăng ngay"), (AT, "Hẹn giờ")]
        hint = ("Với “Hẹn giờ”: bản tin chỉ hiện trên trang và trong các nguồn tin từ thời "
                "điểm này. Một thời điểm đã qua là ngày đăng lùi lại.")  # fmt: skip
        heading, action = "Viết bản tin mới", "/console/bulletins/new"
        submit_action, submit_label = "publish", "Đăng bản tin"
    else:
        shown = local_text(editing.published_at, settings)
        if editing.status == BulletinStatus.SCHEDULED:
            when = [(NOW, "Đăng ngay"), (AT, "Hẹn giờ")]
            hint = f"Đang hẹn đăng lúc {shown}."
        else:
            when = [(KEEP, "Giữ thời điểm đăng"), (AT, "Đổi thời điểm đăng")]
            hint = f"Đang là {shown}."
            if editing.public:
                hint += " Bản tin đã đăng không thể hẹn giờ lại; muốn thôi đăng thì gỡ bản tin."
        heading = f"Sửa bản tin: {editing.title}"
        action = f"/console/bulletins/{editing.id}/edit"
        submit_action, submit_label = "save", "Lưu bản sửa"
    if form.when not in {value for value, _ in when}:
        form.when = when[0][0]
    return page(
        request, "editor.html", status=status, viewer=viewer, form=form, errors=errors or {},
        ids=FIELD_IDS, preview=preview, categories=categories or [], alert=alert,
        formats=formats, when_choices=when, when_hint=hint, heading=heading, action=action,
        submit_action=submit_action, submit_label=submit_label,
        bulletin={"id": editing.id} if editing else None, headers=headers,
    )  # fmt: skip


def _preview(
    renderer: PageRenderer, settings: Settings, viewer: auth.Viewer,
    bulletin_in: BulletinCreate, body_html: str, editing: Editing | None,
) -> str:  # fmt: skip
    """The real article page of the bulletin as it would be published, from a transient row
    (never added to a session): the render worker's own code, citation links included, so
    the editor sees which documents the text will link before publishing."""
    now = utcnow()
    agency = Agency(id=viewer.agency_id, slug=viewer.agency_slug, name=viewer.agency_name)
    published_at = bulletin_in.published_at or (editing.published_at if editing else now)
    bulletin = Bulletin(
        id=editing.id if editing else 0,
        guid=editing.guid if editing else "urn:uuid:00000000-0000-4000-8000-000000000000",
        agency_id=viewer.agency_id,
        slug=editing.slug if editing else slugify(bulletin_in.title),
        title=bulletin_in.title,
        summary=bulletin_in.summary,
        body_format=bulletin_in.body_format,
        body_source=bulletin_in.body,
        body_html=body_html,
        author=bulletin_in.author,
        category=bulletin_in.category,
        category_slug=slugify(bulletin_in.category, fallback="khac")
        if bulletin_in.category else None,
        language=bulletin_in.language,
        published_at=published_at,
        status=BulletinStatus.PUBLISHED,
        revision=editing.revision + 1 if editing else 1,
        created_at=now,
        updated_at=now,
    )  # fmt: skip
    bulletin.agency = agency
    documents = citations.extract_bulletin(bulletin.title, bulletin.summary, body_html)
    return renderer.article(bulletin, documents)


def renderer_of(request: Request) -> PageRenderer:
    state = request.app.state
    found = getattr(state, "console_renderer", None)
    if found is None:
        found = PageRenderer(state.settings, static_base="/console/static/site")
        state.console_renderer = found
    assert isinstance(found, PageRenderer)
    return found


async def _validated(
    request: Request, viewer: auth.Viewer, form: BulletinForm, editing: Editing | None,
) -> tuple[BulletinCreate | None, str | None, FieldErrors]:  # fmt: skip
    """The form as the API's model and its body as safe HTML, or the errors."""
    settings = settings_of(request)
    bulletin_in, errors = to_create(form, settings, utcnow(), formats=_formats(editing))
    if bulletin_in is None:
        return None, None, errors
    try:
        body_html = await run_in_threadpool(service.render_body, settings, bulletin_in)
    except Problem as problem:
        return None, None, {"body": [f"Nội dung không hợp lệ: {problem.detail}"]}
    return bulletin_in, body_html, {}


async def _categories_async(request: Request, viewer: auth.Viewer) -> list[str]:
    """The datalist's categories, read at most every CATEGORIES_SECONDS per process and
    agency: they change rarely, and every editor page and form post shows them."""
    state = request.app.state
    cache: dict[int, tuple[float, list[str]]] | None = getattr(state, "console_categories", None)
    if cache is None:
        cache = state.console_categories = {}
    cached = cache.get(viewer.agency_id)
    if cached is not None and time.monotonic() - cached[0] < CATEGORIES_SECONDS:
        return cached[1]
    names = await run_in_threadpool(
        in_session, settings_of(request), lambda s: _categories(s, viewer.agency_id)
    )
    cache[viewer.agency_id] = (time.monotonic(), names)
    return names


@router.get("/bulletins/new")
async def new_form(request: Request) -> Response:
    viewer = await require_viewer(request)
    return editor_page(request, viewer, BulletinForm(),
                       categories=await _categories_async(request, viewer))  # fmt: skip


@router.post("/bulletins/new")
async def new_submit(request: Request) -> Response:
    viewer = await require_viewer(request)
    data = await read_form(request)
    check_csrf(viewer, data)
    settings = settings_of(request)
    form = BulletinForm.from_form(data)
    form.revision = None
    categories = await _categories_async(request, viewer)
    bulletin_in, body_html, errors = await _validated(request, viewer, form, None)
    if bulletin_in is None or body_html is None:
        return editor_page(request, viewer, form, status=422, errors=errors,
                           categories=categories)  # fmt: skip
    if data.get("action") != "publish":
        preview = await run_in_threadpool(
            _preview, renderer_of(request), settings, viewer, bulletin_in, body_html, None
        )
        return editor_page(request, viewer, form, preview=preview, categories=categories)
    if data.get(CONFIRM_FIELD) != "1":
        twin = await run_in_threadpool(
            in_session,
            settings,
            lambda s: _twin(s, settings, viewer, bulletin_in, form.idempotency_key),
        )
        if twin is not None:
            return _twin_page(request, viewer, form, twin)
    writer = request.app.state.writer
    try:
        await may_write(request, viewer)
        accepted = await asyncio.wrap_future(
            writer.submit(viewer.agency_id, bulletin_in, body_html, form.idempotency_key)
        )
    except Problem as problem:
        return _publish_refused(request, viewer, form, problem, categories)
    service.log_accepted(viewer.agency_slug, accepted)
    return see_other(f"/console/bulletins/{accepted.id}")


@dataclass(frozen=True)
class Twin:
    id: int
    title: str
    created: str


def _twin(
    session: Session, settings: Settings, viewer: auth.Viewer, bulletin_in: BulletinCreate,
    key: str,
) -> Twin | None:  # fmt: skip
    """A bulletin the agency published from this very text in the last TWIN_WINDOW, unless
    this form's key already made one (then the writer's replay answers, with no question).

    The twin is looked up first and its key compared: a double click's first request may
    commit between two lookups, and must then be this one's replay, never its "twin"."""
    since = utcnow() - TWIN_WINDOW
    found = service.recent_twin(session, viewer.agency_id, service.request_hash(bulletin_in),
                                since)  # fmt: skip
    if found is None or found.idempotency_key == key:
        return None
    if service.key_used(session, viewer.agency_id, key):
        return None
    return Twin(found.id, found.title, local_text(found.created_at, settings))


def _twin_page(
    request: Request, viewer: auth.Viewer, form: BulletinForm, twin: Twin
) -> HTMLResponse:
    """The same text was published moments ago (e.g. Back, then "Đăng bản tin" again on a
    form the browser refilled): ask before making a second bulletin."""
    names = ("title", "summary", "body", "body_format", "author", "category", "when",
             "publish_at", "idempotency_key")  # fmt: skip
    fields = [(name, getattr(form, name)) for name in names]
    return page(request, "twin.html", status=409, viewer=viewer, twin=twin, fields=fields,
                confirm_field=CONFIRM_FIELD)  # fmt: skip


def _publish_refused(
    request: Request, viewer: auth.Viewer, form: BulletinForm, problem: Problem,
    categories: list[str],
) -> HTMLResponse:  # fmt: skip
    """The editor again, with the text kept and what went wrong."""
    if problem.status == 409 and "bulletin_id" in problem.extra:
        # This form's key already made another bulletin (resubmitted after changes): a
        # new key lets the clerk publish this text as a new bulletin, knowingly.
        existing = problem.extra["bulletin_id"]
        form.idempotency_key = BulletinForm().idempotency_key
        alert: dict[str, Any] = {
            "kind": "warning",
            "message": "Biểu mẫu này đã được dùng để đăng một bản tin khác, nên chưa đăng "
            "thêm. Nếu muốn đăng nội dung dưới đây thành một bản tin mới, hãy bấm “Đăng bản "
            "tin” lần nữa.",
            "link": {"href": f"/console/bulletins/{existing}", "text": "Xem bản tin đã đăng"},
        }
        return editor_page(request, viewer, form, status=409, alert=alert,
                           categories=categories)  # fmt: skip
    error = problem_page(problem)
    alert = {"kind": "error", "message": error.message, "link": None}
    return editor_page(request, viewer, form, status=error.status, alert=alert,
                       categories=categories, headers=error.headers)  # fmt: skip


def _loadediting_of(session: Session, viewer: auth.Viewer, bulletin_id: int,
                  settings: Settings) -> tuple[Editing, BulletinForm]:  # fmt: skip
    b = owned(session, viewer, bulletin_id)
    return editing_of(b), BulletinForm.from_bulletin(b, settings)


def _withdrawn_page(editing: Editing) -> ConsoleError:
    return ConsoleError(
        409, "Bản tin đã được gỡ",
        "Bản tin này đã được gỡ nên không thể sửa. Muốn đăng lại nội dung thì viết bản tin mới.",
        link=(f"/console/bulletins/{editing.id}", "Xem bản tin"),
    )  # fmt: skip


@router.get("/bulletins/{bulletin_id:int}/edit")
async def edit_form(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    settings = settings_of(request)
    editing, form = await run_in_threadpool(
        in_session, settings, lambda s: _loadediting_of(s, viewer, bulletin_id, settings)
    )
    if editing.status == BulletinStatus.WITHDRAWN:
        raise _withdrawn_page(editing)
    return editor_page(request, viewer, form, editing=editing,
                       categories=await _categories_async(request, viewer))  # fmt: skip


def _save(
    session: Session, settings: Settings, request: Request, viewer: auth.Viewer,
    bulletin_id: int, bulletin_in: BulletinCreate, body_html: str, revision: int,
) -> None:  # fmt: skip
    """PUT /v1/bulletins/{id} with If-Match: the API's own sequence, with the body the form's
    validation rendered already."""
    state = request.app.state
    service.correct_and_queue(
        session=session, settings=settings, celery=state.celery, refresher=state.refresher,
        agency_id=viewer.agency_id, agency_slug=viewer.agency_slug, bulletin_id=bulletin_id,
        bulletin_in=bulletin_in, if_match=service.etag(revision), body_html=body_html,
    )  # fmt: skip


@router.post("/bulletins/{bulletin_id:int}/edit")
async def edit_submit(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    data = await read_form(request)
    check_csrf(viewer, data)
    settings = settings_of(request)
    editing, _current = await run_in_threadpool(
        in_session, settings, lambda s: _loadediting_of(s, viewer, bulletin_id, settings)
    )
    if editing.status == BulletinStatus.WITHDRAWN:
        raise _withdrawn_page(editing)
    form = BulletinForm.from_form(data)
    if form.revision is None:
        raise ConsoleError(
            400, "Không thực hiện được",
            "Biểu mẫu sửa bản tin không hợp lệ, nên chưa có gì thay đổi. Hãy mở lại trang sửa "
            "rồi làm lại.",
            link=(f"/console/bulletins/{bulletin_id}/edit", "Mở lại trang sửa"),
        )  # fmt: skip
    categories = await _categories_async(request, viewer)
    bulletin_in, body_html, errors = await _validated(request, viewer, form, editing)
    if bulletin_in is None or body_html is None:
        return editor_page(request, viewer, form, status=422, errors=errors, editing=editing,
                           categories=categories)  # fmt: skip
    if data.get("action") != "save":
        preview = await run_in_threadpool(
            _preview, renderer_of(request), settings, viewer, bulletin_in, body_html, editing
        )
        return editor_page(request, viewer, form, preview=preview, editing=editing,
                           categories=categories)  # fmt: skip
    revision = form.revision
    try:
        await may_write(request, viewer)
        await run_in_threadpool(
            in_session, settings,
            lambda s: _save(s, settings, request, viewer, bulletin_id, bulletin_in, body_html,
                             revision),
        )  # fmt: skip
    except Problem as problem:
        if problem.status == 412 and await run_in_threadpool(
            in_session, settings, lambda s: _holds(s, viewer, bulletin_id, bulletin_in)
        ):
            # The same save sent twice, or a colleague saved exactly this: nothing to resolve.
            return see_other(f"/console/bulletins/{bulletin_id}")
        return await _save_refused(request, viewer, form, editing, problem, categories)
    return see_other(f"/console/bulletins/{bulletin_id}")


def _holds(session: Session, viewer: auth.Viewer, bulletin_id: int,
           bulletin_in: BulletinCreate) -> bool:  # fmt: skip
    """The bulletin's current revision has exactly this content."""
    current = service.owned_bulletin(session, viewer.agency_id, bulletin_id)
    return current.content_hash == service.request_hash(bulletin_in)


async def _save_refused(
    request: Request, viewer: auth.Viewer, form: BulletinForm, editing: Editing,
    problem: Problem, categories: list[str],
) -> HTMLResponse:  # fmt: skip
    if problem.status == 412:
        # Someone saved since this editor was loaded. The clerk's text stays; the form now
        # names the current revision, so saving again (after a look) is a deliberate choice.
        current = problem.extra.get("revision")
        if isinstance(current, int):
            form = form.with_revision(current)
        alert: dict[str, Any] = {
            "kind": "error",
            "message": "Bản tin đã được người khác sửa sau khi bạn mở trang này, nên bản sửa "
            "của bạn chưa được lưu. Nội dung bạn viết vẫn ở dưới đây: hãy xem bản hiện tại, "
            "rồi nếu vẫn muốn thay bằng nội dung của bạn thì bấm “Lưu bản sửa” lần nữa.",
            "link": {"href": f"/console/bulletins/{editing.id}",
                     "text": "Xem bản hiện tại (mở ở thẻ này)"},
        }  # fmt: skip
        return editor_page(request, viewer, form, status=409, editing=editing, alert=alert,
                           categories=categories)  # fmt: skip
    if problem.status == 422:
        errors = {"published_at": ["Bản tin đã đăng không thể hẹn giờ lại: chọn một thời "
                                   "điểm không ở tương lai, hoặc gỡ bản tin."]}  # fmt: skip
        return editor_page(request, viewer, form, status=422, editing=editing, errors=errors,
                           categories=categories)  # fmt: skip
    if problem.status == 409:
        raise _withdrawn_page(editing)
    error = problem_page(problem)
    alert = {"kind": "error", "message": error.message, "link": None}
    return editor_page(request, viewer, form, status=error.status, editing=editing,
                       alert=alert, categories=categories, headers=error.headers)  # fmt: skip
