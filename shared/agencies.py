"""Agencies and their API keys. A key is shown once, at creation; only its digest is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Agency, ApiKey
from shared.sanitize import clean_text
from shared.site import RESERVED_SLUGS
from shared.slug import slugify

KEY_PREFIX = "bt_"


class AgencyError(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_agency(session: Session, *, name: str, slug: str | None = None) -> tuple[Agency, str]:
    """Create an agency with a fresh key; returns the agency and the key in clear (once)."""
    name = clean_text(name).strip()
    if not name:
        raise AgencyError("an agency needs a name")
    slug = slugify(slug or name, max_length=60, fallback="")
    if not slug:
        raise AgencyError("the slug must contain letters or digits")
    if slug in RESERVED_SLUGS:
        raise AgencyError(f"the slug {slug!r} is reserved for the site itself")
    if session.scalar(select(Agency.id).where(Agency.slug == slug)) is not None:
        raise AgencyError(f"an agency with the slug {slug!r} already exists")
    agency = Agency(name=name, slug=slug)
    key = new_key()
    agency.api_keys.append(ApiKey(key_hash=hash_key(key)))
    session.add(agency)
    session.flush()
    return agency, key


def agency_for_key(session: Session, key: str) -> Agency | None:
    return session.scalar(select(Agency).join(ApiKey).where(ApiKey.key_hash == hash_key(key)))
