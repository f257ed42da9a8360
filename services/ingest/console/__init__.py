"""The web console for the people who write bulletins, served by ingest under /console/.

Server-rendered Jinja2 pages in Vietnamese with a little progressive-enhancement JavaScript,
every asset shipped here. `install_console(app)` adds its routes and makes every error under
/console an HTML page (the API's answers stay problem+json).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from services.ingest.console import account, bulletins, editor
from services.ingest.console.auth import Viewer
from services.ingest.console.pages import (
    STATIC_DIR,
    ConsoleError,
    SignInRequired,
    current_viewer,
    error_page,
    not_found,
    problem_page,
    sign_in_redirect,
)
from services.ingest.problems import Problem
from services.render.pages import STATIC_DIR as SITE_STATIC_DIR
from shared.security_headers import CONSOLE_HEADERS, is_console_path

__all__ = ["install_console"]

Handler = Callable[[Request, Exception], Awaitable[Response] | Response]


async def _viewer(request: Request, exc: Exception) -> Viewer | None:
    """Who is signed in, for the error page's header (none when the database is the error)."""
    known = getattr(request.state, "viewer", None)
    if isinstance(known, Viewer):
        return known
    # The database failed, or this is the catch-all 500 handler (kind Exception): asking the
    # database who is signed in could fail the same way.
    if isinstance(exc, OperationalError) or type(exc) is Exception:
        return None
    try:
        return await current_viewer(request)
    except Exception:  # the error page must show whatever else fails
        return None


async def _on_console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    return error_page(request, exc, await _viewer(request, exc))


async def _on_sign_in_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return sign_in_redirect(request, exc)


def _console_error_for(exc: Exception) -> ConsoleError:
    if isinstance(exc, Problem):
        return problem_page(exc)
    if isinstance(exc, RequestValidationError):  # e.g. a bad path parameter: no such page
        return not_found()
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return not_found()
        if exc.status_code == 405:
            return ConsoleError(405, "Không thực hiện được",
                                "Trang này không nhận yêu cầu kiểu này.",
                                headers=dict(exc.headers or {}))  # fmt: skip
        if exc.status_code == 413:
            return ConsoleError(
                413, "Nội dung quá dài", "Nội dung gửi lên quá dài, nên chưa có gì được lưu."
            )
    if isinstance(exc, OperationalError):
        return problem_page(Problem(503, "Service unavailable", "database"))
    return ConsoleError(500, "Đã có lỗi",
                        "Đã có lỗi ngoài dự kiến (lỗi đã được ghi lại), nên có thể chưa có gì "
                        "được lưu. Hãy thử lại.")  # fmt: skip


def _html_under_console(app: FastAPI, kind: type[Exception] | int) -> None:
    """Under /console, answer `kind` with the console's HTML page; elsewhere as before."""
    api_handler = app.exception_handlers.get(kind)
    if api_handler is None:
        return

    async def handler(request: Request, exc: Exception) -> Response:
        if not is_console_path(request.url.path):
            answer = api_handler(request, exc)
            return await answer if isinstance(answer, Awaitable) else answer
        error = _console_error_for(exc)
        viewer = None if kind is Exception else await _viewer(request, exc)
        response = error_page(request, error, viewer)
        if kind is Exception:
            # Answered from outside the app's middleware: its headers are added here.
            for name, value in CONSOLE_HEADERS:
                response.headers.setdefault(name, value)
        return response

    app.add_exception_handler(kind, handler)


class Assets(StaticFiles):
    """The console's and the site's CSS and JS. Their URLs carry a version (?v=hash), so a
    day in any cache is safe; ETag and Last-Modified come with StaticFiles."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = "public, max-age=86400"
        return response


def install_console(app: FastAPI) -> None:
    """The console's routes and error pages; call after the API's problem handlers."""
    # The site's own first: /console/static would otherwise take /console/static/site/….
    app.mount("/console/static/site", Assets(directory=SITE_STATIC_DIR), name="console-site")
    app.mount("/console/static", Assets(directory=STATIC_DIR), name="console-static")
    for module in (account, bulletins, editor):
        app.include_router(module.router)
    app.add_exception_handler(ConsoleError, _on_console_error)
    app.add_exception_handler(SignInRequired, _on_sign_in_required)
    for kind in (Problem, RequestValidationError, StarletteHTTPException, OperationalError,
                 Exception):  # fmt: skip
        _html_under_console(app, kind)
