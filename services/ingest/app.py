"""The write API agencies call. `create_app(settings)` builds it; `app_from_env` for uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from redis import Redis
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from services.ingest.admin import router as admin_router
from services.ingest.bulletins import router as bulletins_router
from services.ingest.console import install_console
from services.ingest.deps import KeyCache
from services.ingest.docs import docs_router
from services.ingest.hub import router as hub_router
from services.ingest.keys import router as keys_router
from services.ingest.metrics import MetricsMiddleware
from services.ingest.problems import (
    BodyLimitMiddleware,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from services.ingest.writer import GroupWriter
from shared.celery_app import create_celery_app
from shared.db import engine_for
from shared.heartbeat import Heartbeat, new_beat
from shared.logs import configure_logging
from shared.metrics import exposition, metrics_url
from shared.refresh import Refresher
from shared.security_headers import SecurityHeadersMiddleware
from shared.settings import Settings, get_settings

DESCRIPTION = """
Agencies submit bulletins here; Bantin renders each into an article page and adds it to the
RSS and Atom feeds it belongs to. Authenticate with `Authorization: Bearer <api key>`.
Every error is `application/problem+json`.
"""


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        heartbeat = None
        if app.state.redis is not None:  # `bantin status` lists this process while it beats
            # Its own address, not the public one: nginx in front does not pass /metrics.
            url = metrics_url(settings.ingest_host, settings.ingest_port)
            beat = new_beat("ingest", metrics_url=url)
            heartbeat = Heartbeat(app.state.redis, beat).start()
        try:
            yield
        finally:
            if heartbeat is not None:
                heartbeat.stop()
            app.state.writer.close()  # finish the batch in hand before the process exits

    # No slash redirects: their Location would be built from the client's Host header. The
    # docs pages are ingest's own (services/ingest/docs.py), served without a CDN.
    app = FastAPI(title="Bantin ingest API", version="1", description=DESCRIPTION,
                  lifespan=lifespan, redirect_slashes=False, docs_url=None,
                  redoc_url=None)  # fmt: skip
    app.state.settings = settings
    app.state.celery = create_celery_app(settings)
    app.state.key_cache = KeyCache()
    app.state.queue_ok_at = 0.0
    # A plain client for the queue check, listing refreshes and the writer's render messages;
    # None on non-Redis brokers (unit tests use Kombu's in-memory transport).
    app.state.redis = redis_client(settings)
    app.state.writer = GroupWriter(settings, app.state.celery, app.state.redis)
    app.state.refresher = Refresher(app.state.redis, app.state.celery) if app.state.redis else None
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # the 413 gets them too
    app.add_middleware(MetricsMiddleware)  # last added = outermost: counts every answer
    app.include_router(bulletins_router)
    app.include_router(keys_router)
    app.include_router(admin_router)
    app.include_router(hub_router)
    app.include_router(docs_router(app))
    # The web console (/console/): HTML pages on the same service code, its own error pages.
    install_console(app)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Reading every worker's file in multiprocess mode is disk work: off the event loop.
        body, content_type = await run_in_threadpool(exposition)
        return Response(body, media_type=content_type)

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness and dependencies",
        responses=problem_responses((503,), {503: "A dependency is down: see `checks`"}),
    )
    def healthz() -> JSONResponse:
        checks = {
            "database": _check_database(settings),
            "redis": _check_redis(app),
            # The one thread that stores new bulletins: without it every submission would hang.
            "writer": "ok" if app.state.writer.alive else "error: stopped",
        }
        if all(value == "ok" for value in checks.values()):
            return JSONResponse({"status": "ok", **checks})
        return problem_response(
            503,
            "Service unavailable",
            "A dependency is down.",
            checks=checks,
            headers={"Retry-After": "5"},
        )

    return app


def _check_database(settings: Settings) -> str:
    try:
        with engine_for(settings).connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # health checks report, they never raise
        return f"error: {type(exc).__name__}"


def redis_client(settings: Settings) -> Redis | None:
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    # Short timeouts: a request must get its 503 quickly, not hang on a dead Redis.
    return Redis.from_url(settings.broker_url, socket_timeout=1, socket_connect_timeout=1)


def _check_redis(app: FastAPI) -> str:
    try:
        if app.state.redis is not None:
            app.state.redis.ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def app_from_env() -> FastAPI:
    settings = get_settings()
    configure_logging(settings, "ingest")
    return create_app(settings)
