"""The security headers every Bantin answer carries: one source of truth.

The gateway sends ``SITE_HEADERS`` on every page, feed, asset and error; the ingest API sends
``API_HEADERS`` (``DOCS_HEADERS`` on its Swagger UI and ReDoc pages, ``CONSOLE_HEADERS`` on
the web console under /console) through
``SecurityHeadersMiddleware``; ``deploy/nginx.conf`` repeats the same values, and
tests/unit/gateway/test_nginx_front.py checks through a real nginx that they match these.

The site's Content-Security-Policy, directive by directive:

- ``default-src 'none'``: whatever is not named below may not load at all (frames, media,
  fetch/XHR, workers, manifests, plugins).
- ``script-src 'self'``: the one script is the text-size toolbar, ``/static/site.js``, a file.
  No inline script runs, no handler attribute (``onerror=``...), no ``javascript:`` URL, no
  eval. The JSON-LD ``<script type="application/ld+json">`` is a data block, never executed,
  so script-src does not apply to it (the browser tests check no violation is reported).
- ``style-src 'self'``: ``/static/site.css`` only; no ``<style>`` block or ``style=``
  attribute is honoured (the sanitiser drops both from bodies anyway).
- ``img-src 'self' https: http:``: agency HTML bodies embed their own images by absolute URL
  from any host, and the sanitiser keeps http and https ``src``; refusing them here would
  break real bulletins and gain nothing, since an image cannot run code. ``data:``/``blob:``
  stay refused (the sanitiser never emits them). What a third-party image host learns is
  bounded by the Referrer-Policy: our origin, never the page path.
- ``font-src 'self'``: room for a self-hosted font; nothing else.
- ``object-src 'none'``, ``base-uri 'none'`` (a ``<base href>`` cannot redirect relative
  URLs), ``form-action 'none'`` (the site has no form, so an injected one cannot post
  anywhere), ``frame-ancestors 'none'`` (no clickjacking; ``X-Frame-Options: DENY`` for
  browsers that predate it).
- ``require-trusted-types-for 'script'``: DOM sinks such as ``innerHTML`` refuse plain
  strings, so even a future script of ours cannot turn text into markup by accident.

Deliberately absent: ``upgrade-insecure-requests`` (it would break a site served over plain
http, as in development; the TLS server in deploy/ sends HSTS instead) and
``Cross-Origin-Resource-Policy`` (feed readers and other sites may embed our files).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SITE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' https: http:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ]
)
# Nothing the site does needs a powerful feature: refuse them for the page and any frame.
# Only features Chromium knows are named: an unknown one is logged as an error on every page.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "camera", "geolocation", "gyroscope", "magnetometer", "microphone",
        "payment", "usb",
    )
)  # fmt: skip

_COMMON: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),  # feeds and JSON are never sniffed into HTML/script
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),  # no cross-origin window keeps a handle
    ("Permissions-Policy", PERMISSIONS_POLICY),
)

SITE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", SITE_CSP),
    # The browsers' default, stated: other sites learn our origin, never the bulletin's path.
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    *_COMMON,
)

# The API answers JSON, never a document to render: nothing may load or frame it.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
API_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", API_CSP),
    ("Referrer-Policy", "no-referrer"),
    *_COMMON,
    # Answers are per agency and change any moment: no cache keeps them (unless a route says
    # otherwise; the middleware never replaces a header the app set).
    ("Cache-Control", "no-store"),
)

# Swagger UI (/docs) and ReDoc (/redoc) load only what ingest serves itself (services/ingest/
# docs.py: no CDN, so they work offline). They still need an inline script (Swagger UI's
# start-up call), inline styles (both render with style attributes and <style> blocks), data:
# images (Swagger UI's icons) and a blob: worker (ReDoc's search). These pages show our own
# OpenAPI document only, never agency content, so that is tolerated there, and only there;
# every other API answer keeps API_CSP.
DOCS_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",  # "Try it out" and the OpenAPI document
        "worker-src blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
DOCS_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", DOCS_CSP),
    ("Referrer-Policy", "no-referrer"),
    *_COMMON,
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

# The web console (services/ingest/console/, under /console): pages of ingest's own, with
# forms, one script and one stylesheet of their own, and the preview of the real article page
# in an <iframe srcdoc> (which inherits this policy, so the page's site.css and site.js must
# come from this origin too: /console/static/site/). Compared with the site's policy:
# - ``form-action 'self'``: the console's forms post to itself, nowhere else;
# - ``connect-src 'self'``: console.js polls a bulletin's status.json;
# - ``frame-src 'self'``: the preview frames (srcdoc documents, of this origin);
# - ``trusted-types bantin-paste``: console.js reads pasted HTML into an inert document
#   through that one policy; every other script sink refuses plain strings.
# Answers are per user and change any moment: never stored by any cache.
CONSOLE_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' https: http:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-src 'self'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types bantin-paste",
    ]
)
CONSOLE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONSOLE_CSP),
    ("Referrer-Policy", "no-referrer"),
    *_COMMON,
    ("Cache-Control", "no-store"),
)
CONSOLE_PREFIX = "/console"


def is_console_path(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


RawHeaders = list[tuple[bytes, bytes]]


def raw_headers(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    """ASGI header lines: lower-case latin-1 names and values."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class SecurityHeadersMiddleware:
    """Pure ASGI: add ``headers`` (``docs_headers`` on ``docs_paths``) to every HTTP answer,
    keeping any header of the same name the app already set.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware: no task or body copy per request, and
    streamed bodies pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        headers: Iterable[tuple[str, str]] = API_HEADERS,
        docs_headers: Iterable[tuple[str, str]] = DOCS_HEADERS,
        docs_paths: Iterable[str] = DOCS_PATHS,
        console_headers: Iterable[tuple[str, str]] = CONSOLE_HEADERS,
    ) -> None:
        self.app = app
        self.headers = raw_headers(headers)
        self.docs_headers = raw_headers(docs_headers)
        self.docs_paths = frozenset(docs_paths)
        self.console_headers = raw_headers(console_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in self.docs_paths:
            extra = self.docs_headers
        elif is_console_path(path):
            extra = self.console_headers
        else:
            extra = self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(line for line in extra if line[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
