"""RFC 9457 problem+json answers for every error, and the request size limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.extra = status, title, detail, extra
        self.headers = headers or {}  # e.g. the `Retry-After` of a 429

    def document(self) -> dict[str, Any]:
        return {"type": "about:blank", "title": self.title, "status": self.status,
                "detail": self.detail, **self.extra}  # fmt: skip


def problem_response(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "title") → "title": agencies know their JSON fields, not FastAPI's locations;
    # ("header", "idempotency-key") → "Idempotency-Key", as they send it.
    if len(loc) == 2 and loc[0] == "header":
        return "-".join(word.capitalize() for word in str(loc[1]).split("-"))
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def _invalid(errors: Sequence[Any]) -> dict[str, Any]:
    fields = [
        {"field": _field(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
        for e in errors
    ]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return {"type": "about:blank", "title": "Invalid bulletin", "status": 422,
            "detail": detail, "errors": fields}  # fmt: skip


def item_problem(exc: ValidationError) -> dict[str, Any]:
    """The 422 document for one item of a batch."""
    return _invalid(exc.errors())


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx", {})
        return problem_response(
            400,
            "Malformed JSON",
            f"The request body is not valid JSON: {ctx.get('error', '')}".strip(),
        )
    return JSONResponse(_invalid(errors), status_code=422, media_type=PROBLEM_JSON)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {401: "Unauthorized", 404: "Not found", 405: "Method not allowed"}
    return problem_response(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="bantin"'}
    headers = {**(headers or {}), **exc.headers}
    return problem_response(exc.status, exc.title, exc.detail, headers=headers, **exc.extra)


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable: %s", exc)
    return problem_response(
        503,
        "Service unavailable",
        "The database is unavailable; nothing was stored. Retry later.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal error", "An unexpected error occurred; it was logged.")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(OperationalError, _on_database_down)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimitMiddleware:
    """Answer 413 for a body over `limit` bytes, by its Content-Length or as it streams in.

    The body is read here (bounded) and replayed to the app, so an oversized chunked upload
    is cut off after `limit` bytes instead of being buffered whole.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": f"The request body is over the limit of {self.limit} bytes.",
                "limit": self.limit,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
