"""RFC 9457 problem+json answers for every error, their OpenAPI description, and the request
size limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.security_headers import API_HEADERS, is_console_path

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5

# Titles of the answers the framework makes (Problems raised by our code carry their own);
# any other status gets its standard reason phrase, never a generic "Error".
TITLES = {
    400: "Malformed JSON",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
}


def title_for(status: int) -> str:
    return TITLES.get(status) or HTTPStatus(status).phrase


class FieldError(BaseModel):
    field: str = Field(description="The JSON field (dotted for nested ones), header or "
                       "path parameter at fault.")  # fmt: skip
    message: str


class ProblemDocument(BaseModel):
    """An RFC 9457 problem. Some add members of their own (e.g. `limit` and `retry_after` on
    a 429, `revision` on a 412): clients must ignore members they don't know."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "title: must not be empty or blank",
                    "errors": [{"field": "title", "message": "must not be empty or blank"}],
                }
            ]
        },
    )

    type: str = Field("about:blank", description="Always `about:blank`: see `status`.")
    title: str = Field(description="Short and the same for every problem of this kind.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, for people.")
    errors: list[FieldError] | None = Field(
        None, description="On a 422: every invalid field, with the reason."
    )


PROBLEM_SCHEMA_NAME = ProblemDocument.__name__  # as FastAPI names it in the components
_PROBLEM_SCHEMA = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA_NAME}"}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
# What each status means on this API; the operations pick the ones they can answer.
_MEANINGS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body is not JSON (or not UTF-8)", {}),
    401: (
        "Missing, invalid or revoked API key",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    ),
    403: ("The agency was disabled by the operators; the key itself is valid", {}),
    404: ("No such resource for this agency", {}),
    409: ("Conflicts with the resource's state", {}),
    412: ("`If-Match` names a revision that is no longer current", {}),
    413: ("The request body is over the size limit", {}),
    415: ("The body is not `application/json`", {}),
    422: ("Invalid fields, headers or parameters, each listed in `errors`", {}),
    429: ("Over the agency's rate limit", {"Retry-After": _RETRY_AFTER}),
    503: (
        "A dependency (database, queue) is unavailable; nothing was changed",
        {"Retry-After": _RETRY_AFTER},
    ),
}


def problem_responses(
    statuses: Iterable[int], meaning: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of an operation that can answer these problems; `meaning` says what a
    status means for this operation, where the general description is too vague."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description, headers = _MEANINGS[status]
        entry: dict[str, Any] = {
            "description": (meaning or {}).get(status, description),
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}},
        }
        if headers:
            entry["headers"] = headers
        responses[status] = entry
    return responses


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


def _invalid(errors: Sequence[Any], title: str) -> dict[str, Any]:
    fields = [
        {"field": _field(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
        for e in errors
    ]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return {"type": "about:blank", "title": title, "status": 422,
            "detail": detail, "errors": fields}  # fmt: skip


def item_problem(exc: ValidationError) -> dict[str, Any]:
    """The 422 document for one item of a batch."""
    return _invalid(exc.errors(), "Invalid bulletin")


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = errors[0].get("ctx", {})
        return problem_response(
            400,
            title_for(400),
            f"The request body is not valid JSON: {ctx.get('error', '')}".strip(),
        )
    # FastAPI parses only application/json (and +json) bodies; any other arrives as raw bytes
    # and fails as "not an object", when its type is what is wrong.
    if any(e["loc"] == ("body",) and isinstance(e.get("input"), bytes) for e in errors):
        content_type = request.headers.get("content-type") or "no Content-Type"
        return problem_response(
            415, title_for(415), f"Send the body as application/json, not {content_type}."
        )
    return JSONResponse(_invalid(errors, title_for(422)), status_code=422, media_type=PROBLEM_JSON)


def _unparsable(cause: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body (it says only "There was an error...")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"The request body is not valid UTF-8: {cause.reason} at byte {cause.start}."
    if isinstance(cause, RecursionError):
        return "The request body's JSON is nested too deeply."
    if isinstance(cause, ValueError):  # e.g. an integer of more than 4300 digits
        return f"The request body is not JSON this API can read: {cause}."
    return "The request body could not be read as JSON."


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette's 405 names only the methods of
    the first route there), found by asking the routes as the router would."""

    def routed(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return ", ".join(method for method in sorted(_METHODS) if routed(method))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, detail = exc.status_code, str(exc.detail)
    headers = dict(exc.headers or {})
    if status == 400 and detail == "There was an error parsing the body":
        detail = _unparsable(exc.__cause__)
    if status == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(status, title_for(status), detail, headers=headers)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    if exc.status >= 500:  # the service, not the client, is at fault: operators must see it
        log.warning("%s %s answered %d: %s", request.method, request.url.path, exc.status,
                    exc.detail)  # fmt: skip
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
    # Starlette answers this from outside the app's middleware: add the API's headers here.
    return problem_response(
        500, "Internal error", "An unexpected error occurred; it was logged.",
        headers=dict(API_HEADERS),
    )  # fmt: skip


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(OperationalError, _on_database_down)
    app.add_exception_handler(Exception, _on_unexpected)
    app.openapi = _with_problem_schema(app.openapi)  # type: ignore[method-assign]


def _with_problem_schema(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Make sure ProblemDocument is in the document's components, where `problem_responses`
    points: FastAPI adds a model there only when a route answers it as `application/json`,
    which problems never are (today the batch results happen to hold one)."""

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI's, cached after the first call
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if PROBLEM_SCHEMA_NAME not in schemas:
            problem = ProblemDocument.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(problem.pop("$defs", {}))
            schemas[PROBLEM_SCHEMA_NAME] = problem
        return document

    return openapi


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
        content_type = PROBLEM_JSON
        body = json.dumps(
            {
                "type": "about:blank",
                "title": title_for(413),
                "status": 413,
                "detail": f"The request body is over the limit of {self.limit} bytes.",
                "limit": self.limit,
            }
        ).encode()
        if is_console_path(scope["path"]):  # a person at a browser: a page in their language
            content_type, body = "text/html; charset=utf-8", _console_too_large(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _console_too_large(limit: int) -> bytes:
    """The web console's 413 page: plain, self-contained, nothing stored."""
    megabytes = f"{limit / 1_048_576:.1f}".replace(".", ",")
    return (
        '<!DOCTYPE html>\n<html lang="vi"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Nội dung quá dài – Bantin</title>"
        '<link rel="stylesheet" href="/console/static/console.css"></head><body>'
        '<main id="noi-dung" class="wrap main"><h1>Nội dung quá dài</h1>'
        f'<p role="alert" class="alert alert--error">Biểu mẫu gửi lên lớn hơn giới hạn '
        f"{megabytes} MB, nên chưa có gì được lưu. Hãy quay lại trang trước (nội dung vẫn còn "
        "trong trình duyệt), rút ngắn nội dung rồi gửi lại.</p>"
        '<p><a href="/console/bulletins">Về danh sách bản tin</a></p></main></body></html>'
    ).encode()
