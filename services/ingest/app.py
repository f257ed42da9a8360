"""The write API agencies call. `create_app(settings)` builds it; `app_from_env` for uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from redis import Redis
from sqlalchemy import text

from services.ingest.admin import router as admin_router
from services.ingest.bulletins import router as bulletins_router
from services.ingest.deps import KeyCache
from services.ingest.keys import router as keys_router
from services.ingest.problems import (
    BodyLimitMiddleware,
    install_problem_handlers,
    problem_response,
    problem_responses,
)
from services.ingest.writer import GroupWriter
from shared.celery_app import create_celery_app
from shared.db import engine_for
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
        yield
        app.state.writer.close()  # finish the batch in hand before the process exits

    # No slash redirects: their Location would be built from the client's Host header.
    app = FastAPI(title="Bantin ingest API", version="1", description=DESCRIPTION,
                  lifespan=lifespan, redirect_slashes=False)  # fmt: skip
    app.state.settings = settings
    app.state.celery = create_celery_app(settings)
    app.state.writer = GroupWriter(settings, app.state.celery)
    app.state.key_cache = KeyCache()
    app.state.queue_ok_at = 0.0
    # A plain client for the queue check and listing refreshes; None on non-Redis brokers
    # (unit tests use Kombu's in-memory transport).
    app.state.redis = redis_client(settings)
    app.state.refresher = Refresher(app.state.redis, app.state.celery) if app.state.redis else None
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # last added = outermost: the 413 gets them too
    app.include_router(bulletins_router)
    app.include_router(keys_router)
    app.include_router(admin_router)

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
    return create_app(get_settings())
