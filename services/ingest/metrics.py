"""Ingest's Prometheus metrics and the middleware that counts every HTTP answer.

Labels stay few and bounded: `route` is the matched route's template (`/v1/bulletins/{bulletin_id}`,
never the raw path; `unmatched` for a path no route knows), `status` the answer's code. In
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, as under `uvicorn --workers 2`) every worker
writes its samples to that directory and any worker's `/metrics` serves their sum.

The HTTP metrics are named `bantin_ingest_http_*`, the gateway's `bantin_gateway_http_*`: their
labels and buckets differ, and one process (a test, a tool) may import both apps.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest.problems import PROBLEM_JSON

# Seconds. Ingest answers in milliseconds; a render-heavy body or a slow database, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
# Any other method is counted as "other": a client must not mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "bantin_ingest_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "bantin_ingest_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
PROBLEMS = Counter(
    "bantin_ingest_http_problems_total",
    "application/problem+json answers, by status code.",
    ["status"],
)
ACCEPTED = Counter(
    "bantin_bulletins_accepted_total",
    "Bulletins accepted (single or batch item): created, or an Idempotency-Key replay.",
    ["outcome"],
)
REJECTED = Counter(
    "bantin_bulletins_rejected_total",
    "Submissions refused: a whole request (single or batch) or one batch item, by status class.",
    ["status_class"],
)
CORRECTIONS = Counter(
    "bantin_bulletin_corrections_total",
    "Corrections answered: changed (a new revision) or unchanged (the same content again).",
    ["outcome"],
)
WITHDRAWALS = Counter(
    "bantin_bulletin_withdrawals_total",
    "Withdrawals answered: changed, or unchanged (already withdrawn).",
    ["outcome"],
)

# Routes whose refusals count as rejected submissions.
SUBMIT_ROUTES = frozenset({("POST", "/v1/bulletins"), ("POST", "/v1/bulletins:batch")})

for _outcome in ("created", "replayed"):  # zeros from the start: rate() needs a first sample
    ACCEPTED.labels(_outcome)
for _counter in (CORRECTIONS, WITHDRAWALS):
    for _outcome in ("changed", "unchanged"):
        _counter.labels(_outcome)
for _class in ("4xx", "5xx"):
    REJECTED.labels(_class)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class MetricsMiddleware:
    """Pure ASGI: count and time every HTTP answer by route template and status, and count
    problem documents. Outermost, so the body limit's 413 and the security headers' work are
    inside what it times; an exception escaping the app counts as the 500 it becomes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        problem = False

        async def observe(message: Message) -> None:
            nonlocal status, problem
            if message["type"] == "http.response.start":
                status = message["status"]
                problem = any(
                    name == b"content-type" and value == PROBLEM_JSON.encode()
                    for name, value in message.get("headers", ())
                )
            await send(message)

        try:
            await self.app(scope, receive, observe)
        except Exception:
            problem = True  # the exception handler answers a 500 problem
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            HTTP_REQUESTS.labels(template, method, str(status)).inc()
            HTTP_DURATION.labels(template, method).observe(time.perf_counter() - started)
            if problem:
                PROBLEMS.labels(str(status)).inc()
            if status >= 400 and (method, template) in SUBMIT_ROUTES:
                REJECTED.labels(status_class(status)).inc()
