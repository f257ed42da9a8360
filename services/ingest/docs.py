"""Swagger UI (`/docs`) and ReDoc (`/redoc`) with every asset served by ingest itself.

FastAPI's own pages load their code from a CDN, so they are blank on a machine without
internet. The `fastapi-offline` package ships the same bundles; ingest serves them under
`/docs/static/`, with the package's version in the URL so an upgrade is never hidden by a
cached copy.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

from services.ingest.problems import Problem

STATIC_URL = "/docs/static"
ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSET_VERSION = version("fastapi-offline")
# The only files served, with their types: nothing else under the package is reachable.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_MAX_AGE = 86_400  # the URL changes with the package version


def asset_url(name: str) -> str:
    return f"{STATIC_URL}/{name}?v={ASSET_VERSION}"


def docs_router(app: FastAPI) -> APIRouter:
    """The pages and their assets, none in the OpenAPI document. Needs `app` for its title,
    OpenAPI URL and Swagger UI parameters."""
    router = APIRouter(include_in_schema=False)
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=redirect_url,
            swagger_js_url=asset_url("swagger-ui-bundle.js"),
            swagger_css_url=asset_url("swagger-ui.css"),
            swagger_favicon_url=asset_url("favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @router.get(redirect_url)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset_url("redoc.standalone.js"),
            redoc_favicon_url=asset_url("favicon.png"),
            with_google_fonts=False,
        )

    @router.get(STATIC_URL + "/{name}")
    def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise Problem(404, "Not found", f"No documentation asset {name!r}.")
        return FileResponse(
            ASSET_DIR / name,
            media_type=media_type,
            headers={"Cache-Control": f"public, max-age={ASSET_MAX_AGE}"},
        )

    return router
