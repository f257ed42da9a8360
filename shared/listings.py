"""The one query behind every index page and feed: the newest published bulletins of a listing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Agency, Bulletin, BulletinStatus
from shared.site import Listing, ListingKind


def newest_bulletins(session: Session, listing: Listing, limit: int) -> list[Bulletin]:
    """The newest `limit` published bulletins, newest first.

    Each filter matches a composite index (status / agency / category, then published_at), so
    the cost stays the same however large the archive grows.
    """
    query = select(Bulletin).where(Bulletin.status == BulletinStatus.PUBLISHED)
    if listing.kind is ListingKind.AGENCY:
        agency_id = select(Agency.id).where(Agency.slug == listing.key).scalar_subquery()
        query = query.where(Bulletin.agency_id == agency_id)
    elif listing.kind is ListingKind.CATEGORY:
        query = query.where(Bulletin.category_slug == listing.key)
    query = query.order_by(Bulletin.published_at.desc(), Bulletin.id.desc()).limit(limit)
    return list(session.scalars(query))


def listing_heading(session: Session, listing: Listing, site_title: str) -> str:
    """The human name of a listing: the site, the agency's name, or the category as written."""
    if listing.kind is ListingKind.AGENCY:
        name = session.scalar(select(Agency.name).where(Agency.slug == listing.key))
        return name or listing.key
    if listing.kind is ListingKind.CATEGORY:
        category = session.scalar(
            select(Bulletin.category)
            .where(Bulletin.category_slug == listing.key)
            .order_by(Bulletin.id.desc())
            .limit(1)
        )
        return category or listing.key
    return site_title
