"""The console's pages: sign-in, set password, the list, the editor, a bulletin, withdrawal.

Every change goes through the same service code as the API (services/ingest/service.py and
the GroupWriter), with the same queue check and the agency's rate limit, so the console
inherits the API's guarantees: an idempotency key per form, a correction guarded by the
revision the editor loaded (If-Match), withdrawals as revisions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from services.ingest import deps, service
from services.ingest.console import auth
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
from services.ingest.problems import Problem
from services.ingest.schemas import WITHDRAWAL_NOTICE_MAX, BulletinCreate
from services.render.pages import STATIC_DIR as SITE_STATIC_DIR
from services.render.pages import PageRenderer
from shared import users
from shared.db import session_factory
from shared.models import (
    Agency,
    BodyFormat,
    Bulletin,
    BulletinStatus,
    Category,
    User,
    utcnow,
)
from shared.sanitize import clean_text
from shared.settings import Settings
from shared.site import absolute, article_path
from shared.slug import fold, slugify

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
PAGE_SIZE = 20
MAX_QUERY = 200
MAX_CATEGORIES = 300
FOLD_BATCH = 500  # titles folded per search, at most (see _fold_missing)
# A new bulletin with the very text of one published this recently is asked about first.
TWIN_WINDOW = timedelta(hours=1)
CONFIRM_FIELD = "publish_again"
CATEGORIES_SECONDS = 10.0
CONSOLE_TITLE = "Bantin – Bàn làm việc"
EDITOR_PATHS = ("/console/bulletins/new", "/console/bulletins/")  # new, and …/{id}/edit
# The editor's fields shown back after the session ended, with their labels.
KEPT_FIELDS = {
    "title": "Tiêu đề",
    "summary": "Tóm tắt",
    "body": "Nội dung",
    "author": "Tác giả",
    "category": "Chuyên mục",
    "notice": "Thông báo công khai",
}

T = TypeVar("T")

router = APIRouter(prefix="/console", include_in_schema=False)


# -- errors and redirects --


class ConsoleError(Exception):
    """Answer with the console's HTML error page."""

    def __init__(
        self, status: int, heading: str, message: str, *,
        link: tuple[str, str] | None = None, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.heading, self.message = status, heading, message
        self.link, self.headers = link, headers or {}


class SignInRequired(Exception):
    """Not signed in (or the session ended): to the sign-in page, coming back here after."""

    def __init__(
        self, next_path: str, clear: bool, kept: dict[str, str] | None = None,
        expired: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(next_path)
        self.next_path, self.clear = next_path, clear
        self.kept = kept or {}  # the text of an editor posted after the session ended
        self.expired = expired  # an editor's post: say so on a page, not by a redirect


def not_found() -> ConsoleError:
    # The same page for a missing bulletin and another agency's: ids reveal nothing.
    return ConsoleError(404, "Không tìm thấy trang",
                        "Không có trang này, hoặc trang không thuộc cơ quan của bạn.")  # fmt: skip


def form_expired() -> ConsoleError:
    return ConsoleError(
        403, "Biểu mẫu đã hết hạn",
        "Biểu mẫu đã hết hạn hoặc không hợp lệ, nên chưa có gì thay đổi. Hãy tải lại trang "
        "rồi làm lại.",
    )  # fmt: skip


def problem_page(problem: Problem) -> ConsoleError:
    """A service Problem, told in Vietnamese."""
    status = problem.status
    if status == 404:
        return not_found()
    if status == 429:
        wait = problem.headers.get("Retry-After", "vài")
        return ConsoleError(
            429, "Gửi quá nhiều trong thời gian ngắn",
            f"Cơ quan của bạn đã gửi quá nhiều thay đổi trong thời gian ngắn, nên chưa có gì "
            f"được lưu. Hãy thử lại sau {wait} giây.",
            headers={"Retry-After": problem.headers.get("Retry-After", "1")},
        )  # fmt: skip
    if status == 409:
        return ConsoleError(409, "Không thực hiện được", "Bản tin đã được gỡ nên không thể sửa. "
                            "Hãy viết bản tin mới.")  # fmt: skip
    if status >= 500:
        return ConsoleError(
            503 if status == 503 else status, "Hệ thống tạm thời gián đoạn",
            "Hệ thống tạm thời chưa nhận được thay đổi, nên chưa có gì được lưu. Hãy thử lại "
            "sau ít phút.",
            headers={"Retry-After": "5"} if status == 503 else None,
        )  # fmt: skip
    return ConsoleError(status, "Không thực hiện được",
                        "Yêu cầu không hợp lệ, nên chưa có gì thay đổi.")  # fmt: skip


# -- rendering --


def _static_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


STATIC_VERSION = _static_version()
_env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
_env.globals.update(console_title=CONSOLE_TITLE, static_version=STATIC_VERSION)


def page(
    request: Request, template: str, *, status: int = 200, viewer: auth.Viewer | None = None,
    headers: Mapping[str, str] | None = None, **context: Any,
) -> HTMLResponse:  # fmt: skip
    settings: Settings = request.app.state.settings
    html = _env.get_template(template).render(
        viewer=viewer, site_title=settings.site_title, **context
    )
    return HTMLResponse(html, status_code=status, headers=dict(headers or {}))


def error_page(request: Request, error: ConsoleError, viewer: auth.Viewer | None) -> HTMLResponse:
    link = {"href": error.link[0], "text": error.link[1]} if error.link else None
    return page(request, "error.html", status=error.status, viewer=viewer, heading=error.heading,
                message=error.message, link=link, headers=error.headers)  # fmt: skip


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- time --


def local_text(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.tz).strftime("%H:%M %d/%m/%Y")


def local_iso(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.tz).isoformat(timespec="seconds")


# -- who is signed in --


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _in_session(settings: Settings, work: Callable[[Session], T]) -> T:
    with session_factory(settings)() as session:
        result = work(session)
        session.commit()
        return result


def _viewer_of(session: Session, token: str, settings: Settings) -> auth.Viewer | None:
    found = users.session_user(session, token, idle_hours=settings.console_session_hours)
    if found is None:
        return None
    console_session, user = found
    return _viewer(token, console_session.csrf_token, user)


def _viewer(token: str, csrf_token: str, user: User) -> auth.Viewer:
    return auth.Viewer(
        token=token, csrf_token=csrf_token, user_id=user.id, email=user.email, name=user.name,
        agency_id=user.agency_id, agency_slug=user.agency.slug, agency_name=user.agency.name,
    )  # fmt: skip


async def current_viewer(request: Request) -> auth.Viewer | None:
    token = request.cookies.get(auth.SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    settings = _settings(request)
    try:
        return await run_in_threadpool(
            _in_session, settings, lambda s: _viewer_of(s, token, settings)
        )
    except (StaleDataError, ObjectDeletedError):
        # The session ended (signed out in another tab, expired, the user disabled) while
        # this request read it: signed out, not an error.
        return None


async def require_viewer(request: Request) -> auth.Viewer:
    viewer = await current_viewer(request)
    if viewer is None:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        kept: dict[str, str] = {}
        expired = False
        if request.method == "POST" and target.startswith(EDITOR_PATHS):
            # The session ended while the clerk was writing: their text is shown back to them
            # rather than lost behind a redirect; only from the console's own pages, so
            # another site cannot show its words on ours.
            expired = True
            if auth.same_origin(request, _settings(request)):
                data = await read_form(request)
                kept = {name: value for name in KEPT_FIELDS
                        if isinstance(value := data.get(name), str) and value.strip()}  # fmt: skip
        raise SignInRequired(target, clear=auth.SESSION_COOKIE in request.cookies, kept=kept,
                             expired=expired)  # fmt: skip
    request.state.viewer = viewer  # for the error pages
    return viewer


async def read_form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=50)
    except Exception as exc:  # a malformed body: nothing can be done with it
        raise form_expired() from exc


def check_csrf(viewer: auth.Viewer, data: FormData) -> None:
    if not auth.same_token(viewer.csrf_token, data.get(auth.CSRF_FIELD)):
        raise form_expired()


# -- the home page, signing in and out --


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    viewer = await current_viewer(request)
    return see_other(auth.HOME if viewer else auth.SIGN_IN)


def _with_anonymous_csrf(request: Request, response: Response, token: str, new: bool) -> Response:
    if new:
        auth.set_cookie(response, _settings(request), request, auth.CSRF_COOKIE, token)
    return response


@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    if await current_viewer(request):
        return see_other(auth.safe_next(request.query_params.get("next")))
    token, new = auth.anonymous_csrf(request)
    response = page(request, "sign_in.html", csrf_token=token, error=None, email="",
                    next=auth.safe_next(request.query_params.get("next")))  # fmt: skip
    return _with_anonymous_csrf(request, response, token, new)


def _check_anonymous_csrf(request: Request, data: FormData) -> None:
    if not auth.same_token(request.cookies.get(auth.CSRF_COOKIE), data.get(auth.CSRF_FIELD)):
        raise form_expired()


def _start(session: Session, user: User, settings: Settings, old_token: str | None) -> str:
    if old_token:  # a new session on every sign-in: a planted cookie never becomes valid
        users.end_session(session, old_token)
    token, _row = users.start_session(session, user, idle_hours=settings.console_session_hours)
    return token


def _signed_in(request: Request, token: str, target: str) -> Response:
    settings = _settings(request)
    response = see_other(target)
    max_age = int(settings.console_session_hours * users.SESSION_CAP_FACTOR * 3600)
    auth.set_cookie(response, settings, request, auth.SESSION_COOKIE, token, max_age=max_age)
    auth.clear_cookie(response, settings, request, auth.CSRF_COOKIE)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    settings = _settings(request)
    data = await read_form(request)
    _check_anonymous_csrf(request, data)
    email = str(data.get("email") or "")[:400]
    password = str(data.get("password") or "")
    target = auth.safe_next(data.get("next"))
    key = users.normalise_email(email)
    address = auth.client_address(request, settings.trusted_networks)
    limiter = auth.sign_in_limiter(settings, request.app.state)
    token, new = auth.anonymous_csrf(request)

    # Taken before the password is checked: simultaneous guesses cannot outrun the budget.
    refusal = await run_in_threadpool(limiter.take, key, address)
    if refusal is not None:
        minutes = max(1, -(-refusal.retry_after // 60))
        until = local_text(utcnow() + timedelta(seconds=refusal.retry_after), settings)
        error = ConsoleError(
            429, "Tạm khoá đăng nhập",
            f"Đã có quá nhiều lần đăng nhập sai. Hãy thử lại sau khoảng {minutes} phút "
            f"(sau {until}).",
            headers={"Retry-After": str(refusal.retry_after)},
        )  # fmt: skip
        return error_page(request, error, None)

    old = request.cookies.get(auth.SESSION_COOKIE)

    def attempt(session: Session) -> str | None:
        user = users.authenticate(session, email, password)
        return None if user is None else _start(session, user, settings, old)

    session_token = await _hashing(request, lambda: _in_session(settings, attempt))
    if session_token is None:
        response = page(request, "sign_in.html", csrf_token=token, email=email, next=target,
                        error="Thư điện tử hoặc mật khẩu không đúng.")  # fmt: skip
        return _with_anonymous_csrf(request, response, token, new)
    await run_in_threadpool(limiter.succeeded, key, address)
    return _signed_in(request, session_token, target)


async def _hashing(request: Request, work: Callable[[], T]) -> T:
    """Work that runs argon2, in a thread under the process's small argon2 limiter."""
    return await anyio.to_thread.run_sync(work, limiter=auth.argon2_limiter(request.app.state))


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    settings = _settings(request)
    viewer = await current_viewer(request)
    response = see_other(auth.SIGN_IN)
    if viewer is None:
        # No session came with the request (a post from another site never carries the Lax
        # cookie): nothing to end, and no cookie to touch; a dead one that came is cleared.
        if auth.SESSION_COOKIE in request.cookies:
            auth.clear_cookie(response, settings, request, auth.SESSION_COOKIE)
        return response
    data = await read_form(request)
    # The header's form names its token apart from the page's own form's.
    given = data.get("sign_out_token") or data.get(auth.CSRF_FIELD)
    if not auth.same_token(viewer.csrf_token, given):
        raise form_expired()
    await run_in_threadpool(_in_session, settings, lambda s: users.end_session(s, viewer.token))
    auth.clear_cookie(response, settings, request, auth.SESSION_COOKIE)
    return response


# -- the invitation link: set a password --


@dataclass(frozen=True)
class Invited:
    email: str
    agency_name: str


def _invited(session: Session, token: str) -> Invited | None:
    user = users.invited_user(session, token) if len(token) <= 200 else None
    return None if user is None else Invited(user.email, user.agency.name)


def _invite_gone() -> ConsoleError:
    return ConsoleError(
        404, "Đường dẫn không còn dùng được",
        "Đường dẫn đăng nhập này đã được dùng, đã hết hạn hoặc không đúng. Hãy nhờ người quản "
        "trị gửi đường dẫn mới.",
        link=(auth.SIGN_IN, "Đến trang đăng nhập"),
    )  # fmt: skip


@router.get("/invite/{token}")
async def invite_form(request: Request, token: str) -> Response:
    invited = await run_in_threadpool(_in_session, _settings(request),
                                      lambda s: _invited(s, token))  # fmt: skip
    if invited is None:
        raise _invite_gone()
    csrf, new = auth.anonymous_csrf(request)
    response = page(request, "invite.html", token=token, csrf_token=csrf, errors=[],
                    email=invited.email, agency_name=invited.agency_name,
                    min_length=users.MIN_PASSWORD_LENGTH)  # fmt: skip
    return _with_anonymous_csrf(request, response, csrf, new)


@router.post("/invite/{token}")
async def accept_invite(request: Request, token: str) -> Response:
    settings = _settings(request)
    data = await read_form(request)
    _check_anonymous_csrf(request, data)
    password = str(data.get("password") or "")
    again = str(data.get("password_again") or "")
    invited = await run_in_threadpool(_in_session, settings, lambda s: _invited(s, token))
    if invited is None:
        raise _invite_gone()
    errors = []
    if len(password) < users.MIN_PASSWORD_LENGTH:
        errors.append(f"Mật khẩu phải có ít nhất {users.MIN_PASSWORD_LENGTH} ký tự.")
    elif len(password) > users.MAX_PASSWORD_LENGTH:
        errors.append(f"Mật khẩu dài quá: tối đa {users.MAX_PASSWORD_LENGTH} ký tự.")
    if password != again:
        errors.append("Hai lần nhập mật khẩu không giống nhau.")
    if errors:
        csrf, new = auth.anonymous_csrf(request)
        response = page(request, "invite.html", status=422, token=token, csrf_token=csrf,
                        errors=errors, email=invited.email, agency_name=invited.agency_name,
                        min_length=users.MIN_PASSWORD_LENGTH)  # fmt: skip
        return _with_anonymous_csrf(request, response, csrf, new)
    old = request.cookies.get(auth.SESSION_COOKIE)

    def accept(session: Session) -> str | None:
        user = users.accept_invite(session, token, password)
        return None if user is None else _start(session, user, settings, old)

    session_token = await _hashing(request, lambda: _in_session(settings, accept))
    if session_token is None:
        raise _invite_gone()
    return _signed_in(request, session_token, auth.HOME)


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
    settings = _settings(request)
    q = (request.query_params.get("q") or "").strip()[:MAX_QUERY]
    page_no = _page_number(request.query_params.get("page"))
    rows = await run_in_threadpool(
        _in_session, settings, lambda s: _rows(s, settings, viewer.agency_id, q, page_no)
    )
    more = len(rows) > PAGE_SIZE
    return page(
        request, "list.html", viewer=viewer, q=q, page=page_no, rows=rows[:PAGE_SIZE],
        first_url=_list_url(q, 1),
        previous_url=_list_url(q, page_no - 1) if page_no > 1 else None,
        next_url=_list_url(q, page_no + 1) if more else None,
    )  # fmt: skip


# -- one bulletin --


def _owned(
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


def _shown(session: Session, settings: Settings, viewer: auth.Viewer, bulletin_id: int) -> Shown:
    b = _owned(session, viewer, bulletin_id)
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
    settings = _settings(request)
    shown = await run_in_threadpool(
        _in_session, settings, lambda s: _shown(s, settings, viewer, bulletin_id)
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
    settings = _settings(request)
    try:
        state = await run_in_threadpool(
            _in_session, settings,
            lambda s: state_of(_owned(s, viewer, bulletin_id, WITHOUT_BODY), settings),
        )  # fmt: skip
    except ConsoleError:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(state.document())


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


def _editing(b: Bulletin) -> Editing:
    public = b.status == BulletinStatus.PUBLISHED or b.rendered_revision > 0
    return Editing(b.id, b.title, b.status, b.revision, public, b.published_at, b.guid, b.slug)


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


def _formats(form: BulletinForm) -> tuple[str, ...]:
    # An HTML body (from the API) can be corrected as HTML; the console writes text/Markdown.
    base = tuple(FORMAT_CHOICES)
    return (*base, BodyFormat.HTML.value) if form.body_format == BodyFormat.HTML else base


def editor_page(
    request: Request, viewer: auth.Viewer, form: BulletinForm, *, status: int = 200,
    editing: Editing | None = None, errors: FieldErrors | None = None,
    preview: str | None = None, categories: list[str] | None = None,
    alert: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None,
) -> HTMLResponse:  # fmt: skip
    settings = _settings(request)
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
    (never added to a session): the render worker's own code."""
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
    return renderer.article(bulletin)


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
    settings = _settings(request)
    bulletin_in, errors = to_create(form, settings, utcnow(), formats=_formats(form))
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
        _in_session, _settings(request), lambda s: _categories(s, viewer.agency_id)
    )
    cache[viewer.agency_id] = (time.monotonic(), names)
    return names


def _caller(viewer: auth.Viewer) -> deps.Caller:
    return deps.Caller(viewer.agency_id, viewer.agency_slug, viewer.agency_name, key_id=0)


async def _may_write(request: Request, viewer: auth.Viewer) -> None:
    """The API's checks before a write: the queue is up, the agency within its rate limit."""
    deps.require_queue(request)
    await deps.enforce_rate_limit(request, _caller(viewer))


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
    settings = _settings(request)
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
            _in_session,
            settings,
            lambda s: _twin(s, settings, viewer, bulletin_in, form.idempotency_key),
        )
        if twin is not None:
            return _twin_page(request, viewer, form, twin)
    writer = request.app.state.writer
    try:
        await _may_write(request, viewer)
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
    this form's key already made one (then the writer's replay answers, with no question)."""
    if service.key_used(session, viewer.agency_id, key):
        return None
    since = utcnow() - TWIN_WINDOW
    found = service.recent_twin(session, viewer.agency_id, service.request_hash(bulletin_in),
                                since)  # fmt: skip
    if found is None:
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


def _load_editing(session: Session, viewer: auth.Viewer, bulletin_id: int,
                  settings: Settings) -> tuple[Editing, BulletinForm]:  # fmt: skip
    b = _owned(session, viewer, bulletin_id)
    return _editing(b), BulletinForm.from_bulletin(b, settings)


def _withdrawn_page(editing: Editing) -> ConsoleError:
    return ConsoleError(
        409, "Bản tin đã được gỡ",
        "Bản tin này đã được gỡ nên không thể sửa. Muốn đăng lại nội dung thì viết bản tin mới.",
        link=(f"/console/bulletins/{editing.id}", "Xem bản tin"),
    )  # fmt: skip


@router.get("/bulletins/{bulletin_id:int}/edit")
async def edit_form(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    settings = _settings(request)
    editing, form = await run_in_threadpool(
        _in_session, settings, lambda s: _load_editing(s, viewer, bulletin_id, settings)
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
    settings = _settings(request)
    editing, _current = await run_in_threadpool(
        _in_session, settings, lambda s: _load_editing(s, viewer, bulletin_id, settings)
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
        await _may_write(request, viewer)
        await run_in_threadpool(
            _in_session, settings,
            lambda s: _save(s, settings, request, viewer, bulletin_id, bulletin_in, body_html,
                             revision),
        )  # fmt: skip
    except Problem as problem:
        if problem.status == 412 and await run_in_threadpool(
            _in_session, settings, lambda s: _holds(s, viewer, bulletin_id, bulletin_in)
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


# -- withdrawal --


@router.get("/bulletins/{bulletin_id:int}/withdraw")
async def withdraw_form(request: Request, bulletin_id: int) -> Response:
    viewer = await require_viewer(request)
    settings = _settings(request)
    shown = await run_in_threadpool(
        _in_session, settings, lambda s: _shown(s, settings, viewer, bulletin_id)
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
    settings = _settings(request)
    notice = str(data.get("notice") or "")
    try:
        service.withdrawal_notice(notice)  # the service's own check, before any budget is spent
        await _may_write(request, viewer)
        await run_in_threadpool(
            _in_session, settings, lambda s: _withdraw(s, request, viewer, bulletin_id, notice)
        )
    except Problem as problem:
        if problem.status == 404:
            raise not_found() from problem
        # The confirmation again, with what went wrong and the notice as typed.
        shown = await run_in_threadpool(
            _in_session, settings, lambda s: _shown(s, settings, viewer, bulletin_id)
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


# -- static files --

_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def _static(directory: Path, name: str) -> Response:
    path = directory / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise not_found()
    # Versioned URLs (?v=hash): a day in any cache is safe.
    return Response(path.read_bytes(), media_type=_TYPES[path.suffix],
                    headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip


@router.get("/static/site/{name}")
async def site_static(name: str) -> Response:
    return _static(SITE_STATIC_DIR, name)


@router.get("/static/{name}")
async def console_static(name: str) -> Response:
    return _static(STATIC_DIR, name)


def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    target = auth.SIGN_IN
    if exc.next_path and exc.next_path.startswith("/console/") and exc.next_path != auth.HOME:
        target += "?next=" + quote(exc.next_path, safe="/")
    response: Response = see_other(target)
    if exc.expired:
        fields = [(KEPT_FIELDS[name], exc.kept[name]) for name in KEPT_FIELDS if name in exc.kept]
        response = page(request, "expired.html", status=403, fields=fields, sign_in=target)
    if exc.clear:
        auth.clear_cookie(response, _settings(request), request, auth.SESSION_COOKIE)
    return response
