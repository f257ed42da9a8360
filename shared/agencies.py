"""Agencies and their API keys. A key is shown once, at creation; only its digest is stored.

An operator can disable an agency (its keys are refused, its published bulletins stay online)
and enable it again, and rotate its key. Every such change is one guarded UPDATE (or runs
under the agency row's lock), so simultaneous changes from several clients end consistent.

Keys look like `bt_live_…` so people and secret scanners can tell them apart; keys issued
before that (`bt_…`) keep working. Each key also keeps a short display prefix (not enough to
use it) and, once revoked, `revoked_at`: a revoked key never authenticates again.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.models import Agency, ApiKey, Bulletin, BulletinStatus, utcnow
from shared.sanitize import clean_text
from shared.site import RESERVED_SLUGS
from shared.slug import slugify

KEY_PREFIX = "bt_live_"
LEGACY_KEY_PREFIX = "bt_"  # keys issued before KEY_PREFIX; still valid
DISPLAY_CHARS = 16  # "bt_live_" + 8 random characters: tells keys apart, useless to an attacker
MAX_ACTIVE_KEYS = 10  # per agency: a leaked key cannot mint keys without end
_MAX_ROW_ID = 2**63 - 1  # larger ids name no row (and overflow the database driver)


class AgencyError(ValueError):
    pass


class KeyLimitError(AgencyError):
    pass


class AgencyExistsError(AgencyError):
    pass


class UnknownAgencyError(AgencyError):
    pass


@dataclass(frozen=True)
class KeyOwner:
    """Who a valid key belongs to, as plain data (ingest caches it across requests)."""

    agency_id: int
    slug: str
    name: str
    key_id: int
    disabled: bool = False  # part of the cached lookup: a disable reaches every process in time


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS]


def _key_row(key: str) -> ApiKey:
    return ApiKey(key_hash=hash_key(key), prefix=display_prefix(key))


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
        raise AgencyExistsError(f"an agency with the slug {slug!r} already exists")
    agency = Agency(name=name, slug=slug)
    key = new_key()
    agency.api_keys.append(_key_row(key))
    session.add(agency)
    session.flush()
    return agency, key


def key_owner(session: Session, key: str) -> KeyOwner | None:
    """The owner of a valid (not revoked) key, and whether the agency is disabled: one query
    on the unique digest index."""
    row = session.execute(
        select(Agency.id, Agency.slug, Agency.name, ApiKey.id, Agency.disabled_at)
        .join(ApiKey)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    agency_id, slug, name, key_id, disabled_at = row
    return KeyOwner(agency_id, slug, name, key_id, disabled=disabled_at is not None)


def agency_for_key(session: Session, key: str) -> Agency | None:
    owner = key_owner(session, key)
    return None if owner is None else session.get(Agency, owner.agency_id)


def list_keys(session: Session, agency_id: int) -> list[ApiKey]:
    return list(
        session.scalars(select(ApiKey).where(ApiKey.agency_id == agency_id).order_by(ApiKey.id))
    )


def issue_key(session: Session, agency_id: int) -> tuple[ApiKey, str]:
    """A new key for the agency, in clear (shown once). At most MAX_ACTIVE_KEYS stay active:
    the agency row is locked first (PostgreSQL; SQLite has one writer anyway), so two
    simultaneous requests cannot both slip under the cap."""
    session.execute(select(Agency.id).where(Agency.id == agency_id).with_for_update())
    key = new_key()
    row = _key_row(key)
    row.agency_id = agency_id
    session.add(row)
    session.flush()
    active = session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.agency_id == agency_id, ApiKey.revoked_at.is_(None))
    )
    if (active or 0) > MAX_ACTIVE_KEYS:
        raise KeyLimitError(
            f"an agency can have at most {MAX_ACTIVE_KEYS} active keys; revoke one first"
        )
    return row, key


def revoke_key(session: Session, agency_id: int, key_id: int) -> ApiKey | None:
    """Revoke one of the agency's keys; None if it has no such key. A guarded update: of two
    simultaneous revocations one sets `revoked_at`, and revoking again changes nothing."""
    if not 0 < key_id <= _MAX_ROW_ID:
        return None
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.agency_id == agency_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return session.scalar(
        select(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.agency_id == agency_id)
        .execution_options(populate_existing=True)
    )


def keys_with_prefix(session: Session, prefix: str) -> list[ApiKey]:
    """Active keys whose display prefix starts with `prefix` (operators name keys this way)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return list(
        session.scalars(
            select(ApiKey).where(
                ApiKey.prefix.like(f"{escaped}%", escape="\\"), ApiKey.revoked_at.is_(None)
            )
        )
    )


def keys_by_id(session: Session, key_id: int) -> ApiKey | None:
    """Any agency's key by its id (keys issued before prefixes were kept have only that)."""
    if not 0 < key_id <= _MAX_ROW_ID:
        return None
    return session.get(ApiKey, key_id)


# Operators' administration ------------------------------------------------------------------


@dataclass(frozen=True)
class AgencySummary:
    """What an operator sees of an agency: `bantin agency list` and GET /v1/admin/agencies."""

    id: int
    slug: str
    name: str
    created_at: datetime
    disabled_at: datetime | None
    active_keys: int
    bulletins: dict[str, int]  # count per status, every status present

    @property
    def status(self) -> str:
        return "active" if self.disabled_at is None else "disabled"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as `--json` prints it and the API answers it."""
        return {
            "slug": self.slug,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "disabled_at": None if self.disabled_at is None else self.disabled_at.isoformat(),
            "active_keys": self.active_keys,
            "bulletins": dict(self.bulletins),
        }


def list_agencies(session: Session, slug: str | None = None) -> list[AgencySummary]:
    """Every agency (or the one with `slug`) by slug, with its active keys and bulletins
    counted: three queries, whatever the number of agencies."""
    agencies = select(Agency).order_by(Agency.slug)
    if slug is not None:
        agencies = agencies.where(Agency.slug == slug)
    rows = list(session.scalars(agencies))
    ids = [row.id for row in rows]
    keys: dict[int, int] = {}
    counts: dict[int, dict[str, int]] = {}
    if ids:
        key_rows = session.execute(
            select(ApiKey.agency_id, func.count())
            .where(ApiKey.agency_id.in_(ids), ApiKey.revoked_at.is_(None))
            .group_by(ApiKey.agency_id)
        )
        keys = dict(key_rows.all())  # not dict(result): a Result has keys(), the columns
        bulletin_rows = session.execute(
            select(Bulletin.agency_id, Bulletin.status, func.count())
            .where(Bulletin.agency_id.in_(ids))
            .group_by(Bulletin.agency_id, Bulletin.status)
        )
        for agency_id, status, count in bulletin_rows:
            counts.setdefault(agency_id, {})[status] = count
    return [
        AgencySummary(
            id=row.id,
            slug=row.slug,
            name=row.name,
            created_at=row.created_at,
            disabled_at=row.disabled_at,
            active_keys=keys.get(row.id, 0),
            bulletins={s.value: counts.get(row.id, {}).get(s.value, 0) for s in BulletinStatus},
        )
        for row in rows
    ]


def agency_summary(session: Session, slug: str) -> AgencySummary:
    found = list_agencies(session, slug)
    if not found:
        raise UnknownAgencyError(f"no agency with the slug {slug!r}")
    return found[0]


def agency_id_for(session: Session, slug: str) -> int:
    agency_id = session.scalar(select(Agency.id).where(Agency.slug == slug))
    if agency_id is None:
        raise UnknownAgencyError(f"no agency with the slug {slug!r}")
    return agency_id


def set_disabled(session: Session, slug: str, disabled: bool) -> bool:
    """Disable (or enable) an agency; True if this call changed it, False if it already was.
    One guarded UPDATE: of simultaneous calls exactly one changes the state, so a series of
    racing disables and enables ends in the state of the last one to change it."""
    guard = Agency.disabled_at.is_(None) if disabled else Agency.disabled_at.is_not(None)
    result = session.execute(
        update(Agency)
        .where(Agency.slug == slug, guard)
        .values(disabled_at=utcnow() if disabled else None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        return True
    agency_id_for(session, slug)  # raises for an unknown slug
    return False


@dataclass(frozen=True)
class Rotation:
    key: ApiKey
    secret: str  # the new key, in clear: shown once
    revoked: list[int]  # ids of the keys this rotation revoked


def rotate_key(session: Session, slug: str, *, keep_old: bool = False) -> Rotation:
    """A new key for the agency and, unless `keep_old`, every other key of it revoked (keep
    them to let the agency switch over, then revoke them). Under the agency row's lock
    (PostgreSQL; SQLite has one writer): simultaneous rotations leave exactly one active key."""
    agency_id = session.scalar(select(Agency.id).where(Agency.slug == slug).with_for_update())
    if agency_id is None:
        raise UnknownAgencyError(f"no agency with the slug {slug!r}")
    revoked: list[int] = []
    if not keep_old:
        # Revoke first, so an agency at its key limit can still rotate.
        revoked = sorted(
            session.scalars(
                update(ApiKey)
                .where(ApiKey.agency_id == agency_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .returning(ApiKey.id)
                .execution_options(synchronize_session=False)
            )
        )
    row, secret = issue_key(session, agency_id)
    return Rotation(row, secret, revoked)
