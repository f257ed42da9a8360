"""FastAPI dependencies: settings, a database session, the authenticated agency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from services.ingest.problems import Problem
from shared.agencies import agency_for_key
from shared.db import session_factory
from shared.models import Agency
from shared.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_factory(settings)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="The agency's API key.")


def get_agency(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Agency:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401, "Unauthorized", "Send the agency's key as `Authorization: Bearer <key>`."
        )
    agency = agency_for_key(session, credentials.credentials)
    if agency is None:
        raise Problem(401, "Unauthorized", "The API key is not valid.")
    return agency


AgencyDep = Annotated[Agency, Depends(get_agency)]


def require_queue(request: Request) -> None:
    """Refuse writes while Redis is unreachable: accepting would promise a publish we cannot
    start. (If Redis fails after this check, the committed row is re-sent by the reconciler.)"""
    client = request.app.state.redis
    if client is None:
        return
    try:
        client.ping()
    except RedisError as exc:
        raise Problem(
            503,
            "Service unavailable",
            "The publishing queue is unavailable; nothing was stored. Retry later.",
        ) from exc


QueueDep = Annotated[None, Depends(require_queue)]
