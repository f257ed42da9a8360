"""The one query behind every index page and feed: the newest published bulletins of a listing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from shared.models import Agency, Bulletin, BulletinStatus, Category
from shared.site import ALL, Listing, ListingKind


def _newest(listing: Listing, *columns: Any) -> Select[Any]:
    """Each filter matches a composite index (status / agency / category, then published_at,
    id), so the cost stays the same however large the archive grows."""
    query = select(*columns).where(Bulletin.status == BulletinStatus.PUBLISHED)
    if listing.kind is ListingKind.AGENCY:
        agency_id = select(Agency.id).where(Agency.slug == listing.key).scalar_subquery()
        query = query.where(Bulletin.agency_id == agency_id)
    elif listing.kind is ListingKind.CATEGORY:
        query = query.where(Bulletin.category_slug == listing.key)
    return query.order_by(Bulletin.published_at.desc(), Bulletin.id.desc())


def newest_bulletins(session: Session, listing: Listing, limit: int) -> list[Bulletin]:
    """The newest `limit` published bulletins, newest first."""
    return list(session.scalars(_newest(listing, Bulletin).limit(limit)))


def newest_versions(session: Session, listing: Listing, limit: int) -> list[tuple[int, int]]:
    """(id, revision) of the same rows as `newest_bulletins`, without loading their bodies."""
    rows = session.execute(_newest(listing, Bulletin.id, Bulletin.revision).limit(limit))
    return [(row.id, row.revision) for row in rows]


def fingerprint(versions: Iterable[tuple[int, int]]) -> str:
    """What a listing shows, in a few bytes: which bulletins, in which order, which revision.

    Builders record it; the reconciler recomputes it from the database, and a difference
    means the built page or feed is stale (a lost trigger, a Redis restart, a killed build).
    """
    digest = hashlib.blake2b(digest_size=12)
    for bulletin_id, revision in versions:
        digest.update(f"{bulletin_id}:{revision};".encode())
    return digest.hexdigest()


def versions_of(bulletins: Iterable[Bulletin]) -> list[tuple[int, int]]:
    return [(b.id, b.revision) for b in bulletins]


def all_listings(session: Session) -> list[Listing]:
    """Every listing the site has: all, each agency, each category."""
    agencies = session.scalars(select(Agency.slug).order_by(Agency.slug))
    categories = session.scalars(select(Category.slug).order_by(Category.slug))
    return [
        ALL,
        *(Listing(ListingKind.AGENCY, slug) for slug in agencies),
        *(Listing(ListingKind.CATEGORY, slug) for slug in categories),
    ]


def listing_heading(session: Session, listing: Listing, site_title: str) -> str:
    """The human name of a listing: the site, the agency's name, or the category as written."""
    if listing.kind is ListingKind.AGENCY:
        name = session.scalar(select(Agency.name).where(Agency.slug == listing.key))
        return name or listing.key
    if listing.kind is ListingKind.CATEGORY:
        category = session.scalar(select(Category.name).where(Category.slug == listing.key))
        return category or listing.key
    return site_title
