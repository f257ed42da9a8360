"""The operators' API: `/v1/admin/...`, authenticated by BANTIN_OPERATOR_TOKEN.

The same administration as `bantin agency ...`: list, create, rotate an agency's key, disable
and enable it. Without BANTIN_OPERATOR_TOKEN every route here answers 404. A disabled
agency's keys (and a rotated-away key) are refused by every ingest process within a second
(KEY_CACHE_SECONDS in deps.py); at once by this one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.ingest.deps import KeyCache, SessionDep, require_operator
from services.ingest.problems import Problem, problem_responses
from shared.agencies import (
    AgencyError,
    AgencyExistsError,
    AgencySummary,
    KeyLimitError,
    UnknownAgencyError,
    agency_summary,
    create_agency,
    list_agencies,
    rotate_key,
    set_disabled,
)
from shared.models import ApiKey

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_operator)])

PROBLEMS = problem_responses(
    (400, 401, 404, 409, 413, 415, 422, 503),
    {
        401: "Missing or wrong operator token (an agency's key is never accepted here)",
        404: "No agency with this slug; or the operators' API is off (BANTIN_OPERATOR_TOKEN unset)",
        409: "An agency with this slug exists already",
        422: "Invalid fields or parameters, each listed in `errors`",
    },
)

_AGENCY_EXAMPLE: JsonDict = {
    "slug": "so-noi-vu",
    "name": "Sở Nội vụ",
    "status": "active",
    "created_at": "2025-03-01T08:00:00Z",
    "disabled_at": None,
    "active_keys": 1,
    "bulletins": {"queued": 0, "scheduled": 1, "published": 42, "withdrawn": 2, "failed": 0},
}
_KEY_EXAMPLE: JsonDict = {
    "id": 7,
    "prefix": "bt_live_AbCd1234",
    "created_at": "2025-03-02T09:30:00Z",
    "key": "bt_live_AbCd1234…",
}


class AgencyPublic(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_AGENCY_EXAMPLE]})

    slug: str = Field(description="The agency's URL name: it names the agency in this API.")
    name: str
    status: Literal["active", "disabled"] = Field(
        description="`disabled`: its keys are refused (403); its published bulletins stay online."
    )
    created_at: datetime
    disabled_at: datetime | None = Field(description="When it was disabled; null if active.")
    active_keys: int = Field(description="Keys not revoked.")
    bulletins: dict[str, int] = Field(description="The agency's bulletins, counted by status.")

    @classmethod
    def of(cls, summary: AgencySummary) -> AgencyPublic:
        return cls.model_validate(summary.as_dict())


class AgencyList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"agencies": [_AGENCY_EXAMPLE]}]})

    agencies: list[AgencyPublic] = Field(description="Every agency, by slug.")


class AgencyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Sở Nội vụ", "slug": "so-noi-vu"}]},
    )

    name: str = Field(min_length=1, max_length=200, description="Shown on pages and feeds.")
    slug: str | None = Field(
        None,
        min_length=1,
        max_length=60,
        description="URL name, e.g. `so-noi-vu` (default: made from the name).",
    )


class NewKey(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    id: int
    prefix: str | None = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    key: str = Field(description="The key, in full. Shown only this once: hand it over now.")

    @classmethod
    def of(cls, row: ApiKey, secret: str) -> NewKey:
        return cls(id=row.id, prefix=row.prefix, created_at=row.created_at, key=secret)


class AgencyCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"agency": _AGENCY_EXAMPLE, "key": _KEY_EXAMPLE}]}
    )

    agency: AgencyPublic
    key: NewKey


class KeyRotated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"agency": _AGENCY_EXAMPLE, "key": _KEY_EXAMPLE, "revoked": [3]}]
        }
    )

    agency: AgencyPublic
    key: NewKey
    revoked: list[int] = Field(
        description="Ids of the keys this rotation revoked (none with `keep_old`): every "
        "ingest process refuses them within a second."
    )


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {code: PROBLEMS[code] for code in (401, 503, *statuses)}


def _summary(session: Session, slug: str) -> AgencyPublic:
    try:
        return AgencyPublic.of(agency_summary(session, slug))
    except UnknownAgencyError as exc:
        raise Problem(404, "Not found", f"There is no agency {slug!r}.") from exc


@router.get(
    "/agencies",
    response_model=AgencyList,
    responses=_responses(404),
    summary="List every agency, its status, keys and bulletins",
)
def get_agencies(session: SessionDep) -> AgencyList:
    return AgencyList(agencies=[AgencyPublic.of(a) for a in list_agencies(session)])


@router.get(
    "/agencies/{slug}",
    response_model=AgencyPublic,
    responses=_responses(404),
    summary="Read one agency",
)
def get_agency_document(slug: str, session: SessionDep) -> AgencyPublic:
    return _summary(session, slug)


@router.post(
    "/agencies",
    status_code=status.HTTP_201_CREATED,
    response_model=AgencyCreated,
    # The body is read before the token is checked: a malformed one gets its 400/413/415.
    responses=_responses(400, 404, 409, 413, 415, 422),
    summary="Create an agency and its first key (shown once)",
)
def post_agency(body: AgencyCreate, response: Response, session: SessionDep) -> AgencyCreated:
    """The key works at once on every ingest process. Only its digest is stored: it cannot be
    shown again (rotate it if it is lost)."""
    try:
        agency, secret = create_agency(session, name=body.name, slug=body.slug)
        key_row = agency.api_keys[0]
        session.commit()
    except AgencyExistsError as exc:
        session.rollback()
        raise Problem(409, "Conflict", str(exc)) from exc
    except IntegrityError as exc:  # the same slug created at the same moment by another call
        session.rollback()
        slug = body.slug or body.name
        raise Problem(
            409, "Conflict", f"an agency with the slug of {slug!r} already exists"
        ) from exc
    except AgencyError as exc:
        session.rollback()
        field = "slug" if "slug" in str(exc) else "name"
        raise Problem(
            422,
            "Invalid request",
            f"{field}: {exc}",
            errors=[{"field": field, "message": str(exc)}],
        ) from exc
    response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep it
    return AgencyCreated(agency=_summary(session, agency.slug), key=NewKey.of(key_row, secret))


@router.post(
    "/agencies/{slug}/rotate-key",
    response_model=KeyRotated,
    responses=_responses(404, 409, 413, 422),
    summary="Mint a new key (shown once) and revoke the agency's others",
)
def post_rotate_key(
    slug: str,
    request: Request,
    response: Response,
    session: SessionDep,
    keep_old: bool = Query(  # noqa: B008 (FastAPI's way of documenting a parameter)
        False,
        description="Keep the other keys active, so the agency can switch over before they "
        "are revoked (then revoke them with `bantin key revoke` or `DELETE /v1/keys/{id}`).",
    ),
) -> KeyRotated:
    """Every ingest process refuses the revoked keys within a second, this one at once. Of
    simultaneous rotations (without `keep_old`) exactly one key survives. A disabled agency
    can be rotated: its new key works once it is enabled."""
    try:
        rotation = rotate_key(session, slug, keep_old=keep_old)
        session.commit()
    except UnknownAgencyError as exc:
        session.rollback()
        raise Problem(404, "Not found", f"There is no agency {slug!r}.") from exc
    except KeyLimitError as exc:
        session.rollback()
        raise Problem(409, "Too many keys", str(exc)) from exc
    cache: KeyCache = request.app.state.key_cache
    for key_id in rotation.revoked:
        cache.forget(key_id)
    response.headers["Cache-Control"] = "no-store"
    return KeyRotated(
        agency=_summary(session, slug),
        key=NewKey.of(rotation.key, rotation.secret),
        revoked=rotation.revoked,
    )


def _set_disabled(request: Request, session: Session, slug: str, disabled: bool) -> AgencyPublic:
    try:
        set_disabled(session, slug, disabled)
        session.commit()
        summary = agency_summary(session, slug)
    except UnknownAgencyError as exc:
        session.rollback()
        raise Problem(404, "Not found", f"There is no agency {slug!r}.") from exc
    cache: KeyCache = request.app.state.key_cache
    cache.forget_agency(summary.id)
    return AgencyPublic.of(summary)


@router.post(
    "/agencies/{slug}/disable",
    response_model=AgencyPublic,
    responses=_responses(404, 413),
    summary="Disable an agency: its keys are refused, its bulletins stay online",
)
def post_disable(slug: str, request: Request, session: SessionDep) -> AgencyPublic:
    """Every ingest process refuses its keys within a second (403 "Agency disabled"), this one
    at once. Nothing is withdrawn, and bulletins it had queued still publish. Disabling a
    disabled agency changes nothing (`disabled_at` stays the first time)."""
    return _set_disabled(request, session, slug, True)


@router.post(
    "/agencies/{slug}/enable",
    response_model=AgencyPublic,
    responses=_responses(404, 413),
    summary="Enable a disabled agency again",
)
def post_enable(slug: str, request: Request, session: SessionDep) -> AgencyPublic:
    """Its keys work again on every ingest process within a second. Enabling an active agency
    changes nothing."""
    return _set_disabled(request, session, slug, False)
