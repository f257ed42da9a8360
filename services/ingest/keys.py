"""The agency's own API keys: list them, mint one, revoke one.

Rotation is two calls: `POST /v1/keys` (the new key is shown once), switch over, then
`DELETE /v1/keys/{id}` of the old one. A revoked key is refused by every ingest process
within a second (see KEY_CACHE_SECONDS in deps.py).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from services.ingest.deps import AgencyDep, Caller, KeyCache, ManagingAgencyDep, SessionDep
from services.ingest.problems import Problem, problem_responses
from shared.agencies import MAX_ACTIVE_KEYS, KeyLimitError, issue_key, list_keys, revoke_key
from shared.models import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])

PROBLEMS = problem_responses(
    (401, 403, 404, 409, 422, 429, 503),
    {
        404: "No such key for this agency",
        409: f"The agency already has {MAX_ACTIVE_KEYS} active keys",
        422: "The key id is not an integer",
    },
)


class KeyPublic(BaseModel):
    id: int
    prefix: str | None = Field(
        description="The key's first characters, to tell keys apart; null for keys issued "
        "before prefixes were kept."
    )
    created_at: datetime
    revoked_at: datetime | None = Field(description="Set once the key is revoked.")
    current: bool = Field(description="True for the key this request was made with.")


class KeyList(BaseModel):
    keys: list[KeyPublic]


class KeyCreated(KeyPublic):
    key: str = Field(description="The new key, in full. Shown only this once: store it now.")


def _public(row: ApiKey, caller: Caller) -> KeyPublic:
    return KeyPublic(
        id=row.id,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        current=row.id == caller.key_id,
    )


@router.get(
    "",
    response_model=KeyList,
    responses={c: PROBLEMS[c] for c in (401, 403, 503)},  # type: ignore[misc]
    summary="List the agency's keys, revoked ones included",
)
def get_keys(session: SessionDep, agency: AgencyDep) -> KeyList:
    return KeyList(keys=[_public(row, agency) for row in list_keys(session, agency.id)])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=KeyCreated,
    responses={c: PROBLEMS[c] for c in (401, 403, 409, 429, 503)},  # type: ignore[misc]
    summary="Mint a new key (shown once)",
)
def create_key(response: Response, session: SessionDep, agency: ManagingAgencyDep) -> KeyCreated:
    """The key works at once on every ingest process. Only its digest is stored: it cannot
    be shown again."""
    try:
        row, key = issue_key(session, agency.id)
        session.commit()
    except KeyLimitError as exc:
        session.rollback()
        raise Problem(409, "Too many keys", str(exc), max_active_keys=MAX_ACTIVE_KEYS) from exc
    response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep it
    return KeyCreated(**_public(row, agency).model_dump(), key=key)


@router.delete(
    "/{key_id}",
    response_model=KeyPublic,
    responses={c: PROBLEMS[c] for c in (401, 403, 404, 422, 429, 503)},  # type: ignore[misc]
    summary="Revoke a key",
)
def delete_key(
    key_id: int, request: Request, session: SessionDep, agency: ManagingAgencyDep
) -> KeyPublic:
    """Every ingest process refuses the key within a second; a request it authenticated
    just before may still complete. Revoking the key of this very request is allowed (then
    this is its last answer); revoking a revoked key changes nothing."""
    row = revoke_key(session, agency.id, key_id)
    if row is None:
        raise Problem(404, "Not found", f"This agency has no key {key_id}.")
    session.commit()
    cache: KeyCache = request.app.state.key_cache
    cache.forget(key_id)  # at once here; other processes within KEY_CACHE_SECONDS
    return _public(row, agency)
