"""Signing in and out, and the invitation link that sets a password.

Every sign-in attempt is taken from the sign-in budgets (auth.SignInLimiter) before its
password is checked; argon2 runs under a small per-process limiter (auth.argon2_limiter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from services.ingest.console import auth
from services.ingest.console.pages import (
    ConsoleError,
    T,
    current_viewer,
    error_page,
    form_expired,
    in_session,
    local_text,
    page,
    read_form,
    see_other,
    settings_of,
)
from shared import users
from shared.models import (
    User,
    utcnow,
)
from shared.settings import Settings

router = APIRouter(prefix="/console", include_in_schema=False)


# -- the home page, signing in and out --


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    viewer = await current_viewer(request)
    return see_other(auth.HOME if viewer else auth.SIGN_IN)


def _with_anonymous_csrf(request: Request, response: Response, token: str, new: bool) -> Response:
    if new:
        auth.set_cookie(response, settings_of(request), request, auth.CSRF_COOKIE, token)
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
    settings = settings_of(request)
    response = see_other(target)
    max_age = int(settings.console_session_hours * users.SESSION_CAP_FACTOR * 3600)
    auth.set_cookie(response, settings, request, auth.SESSION_COOKIE, token, max_age=max_age)
    auth.clear_cookie(response, settings, request, auth.CSRF_COOKIE)
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    settings = settings_of(request)
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

    session_token = await _hashing(request, lambda: in_session(settings, attempt))
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
    settings = settings_of(request)
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
    await run_in_threadpool(in_session, settings, lambda s: users.end_session(s, viewer.token))
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
    invited = await run_in_threadpool(in_session, settings_of(request),
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
    settings = settings_of(request)
    data = await read_form(request)
    _check_anonymous_csrf(request, data)
    # Counted and compared as they are hashed: NFC (a decomposed "ế" is one character).
    password = users.normalise_password(str(data.get("password") or ""))
    again = users.normalise_password(str(data.get("password_again") or ""))
    invited = await run_in_threadpool(in_session, settings, lambda s: _invited(s, token))
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

    session_token = await _hashing(request, lambda: in_session(settings, accept))
    if session_token is None:
        raise _invite_gone()
    return _signed_in(request, session_token, auth.HOME)
