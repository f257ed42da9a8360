"""The console's frame: errors and redirects, rendering, the time as shown, and who is
signed in (the session cookie, read through shared/users.py)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from services.ingest import deps
from services.ingest.console import auth
from services.ingest.console.forms import (
    LABELS,
)
from services.ingest.problems import Problem
from shared import users
from shared.db import session_factory
from shared.models import (
    User,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
CONSOLE_TITLE = "Bantin – Bàn làm việc"
EDITOR_PATHS = ("/console/bulletins/new", "/console/bulletins/")  # new, and …/{id}/edit
# The editor's fields shown back after the session ended, with their labels.
KEPT_FIELDS = {name: LABELS[name] for name in ("title", "summary", "body", "author", "category")}
KEPT_FIELDS["notice"] = "Thông báo công khai"

T = TypeVar("T")


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


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def in_session(settings: Settings, work: Callable[[Session], T]) -> T:
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
    settings = settings_of(request)
    try:
        return await run_in_threadpool(
            in_session, settings, lambda s: _viewer_of(s, token, settings)
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
            if auth.same_origin(request, settings_of(request)):
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


def sign_in_redirect(request: Request, exc: SignInRequired) -> Response:
    target = auth.SIGN_IN
    if exc.next_path and exc.next_path.startswith("/console/") and exc.next_path != auth.HOME:
        target += "?next=" + quote(exc.next_path, safe="/")
    response: Response = see_other(target)
    if exc.expired:
        fields = [(KEPT_FIELDS[name], exc.kept[name]) for name in KEPT_FIELDS if name in exc.kept]
        response = page(request, "expired.html", status=403, fields=fields, sign_in=target)
    if exc.clear:
        auth.clear_cookie(response, settings_of(request), request, auth.SESSION_COOKIE)
    return response


def _caller(viewer: auth.Viewer) -> deps.Caller:
    return deps.Caller(viewer.agency_id, viewer.agency_slug, viewer.agency_name, key_id=0)


async def may_write(request: Request, viewer: auth.Viewer) -> None:
    """The API's checks before a write: the queue is up, the agency within its rate limit."""
    deps.require_queue(request)
    await deps.enforce_rate_limit(request, _caller(viewer))
