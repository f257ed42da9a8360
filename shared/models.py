"""Database models. The bulletin row is the source of truth: Redis only ever carries ids."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import (
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.citations import titled

# The largest id any row can have: ids are INTEGER columns, 32 bits on PostgreSQL (SQLite's
# hold 64). A larger id names nothing, and binding it would be a database error.
MAX_ID = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in Python, naive UTC in the database: SQLite keeps no offsets."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class BulletinStatus(enum.StrEnum):
    QUEUED = "queued"  # accepted, its page not rendered yet
    SCHEDULED = "scheduled"  # embargoed until published_at: visible nowhere
    PUBLISHED = "published"  # page live, in its feeds and index pages
    WITHDRAWN = "withdrawn"  # taken down: the page answers 410, gone from every listing
    FAILED = "failed"  # gave up after repeated errors; `last_error` says why


class BodyFormat(enum.StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    HTML = "html"


class Agency(Base):
    __tablename__ = "agencies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set by an operator: the agency's keys are refused (within a second, on every ingest
    # process); its published bulletins stay online. NULL: active.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="agency")


class ApiKey(Base):
    """An agency's bearer key, kept only as a SHA-256 digest (keys are random, so no slow hash)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The key's first characters, to tell keys apart in listings (never enough to use one).
    # NULL for keys issued before it was kept.
    prefix: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set once, never cleared: a revoked key is refused by every ingest process within a second.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    agency: Mapped[Agency] = relationship(back_populates="api_keys")


class Category(Base):
    """Categories as agencies write them, one row per slug (listings enumerate these)."""

    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class Bulletin(Base):
    __tablename__ = "bulletins"
    __table_args__ = (
        UniqueConstraint("agency_id", "idempotency_key", name="uq_bulletin_idempotency"),
        # The listing queries (feeds, index pages) read the newest N of one scope: each has
        # an index in exactly that order (id breaks ties; SQLite appends it implicitly,
        # PostgreSQL needs it), so the database walks N entries and stops however large the
        # archive grows: no scan, no sort.
        Index("ix_bulletin_listing_all", "status", "published_at", "id"),
        Index("ix_bulletin_listing_agency", "agency_id", "status", "published_at", "id"),
        Index("ix_bulletin_listing_category", "category_slug", "status", "published_at", "id"),
        # The reconciler looks for renders outstanding for too long; NULL (nothing to do)
        # for almost every row, so this index stays small.
        Index("ix_bulletin_pending_since", "pending_since"),
        # `bantin status` reads the last minute's renders (publish latency): a range scan of
        # this index, however large the archive.
        Index("ix_bulletin_rendered_at", "rendered_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The feed guid / Atom id: assigned once, never changed, not even by a correction.
    guid: Mapped[str] = mapped_column(
        String(45), unique=True, default=lambda: f"urn:uuid:{uuid.uuid4()}"
    )
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    # Fixed at creation so the public URL never changes when the title is corrected.
    slug: Mapped[str] = mapped_column(String(120))

    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    body_format: Mapped[str] = mapped_column(String(16))
    body_source: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)  # sanitised; what pages and feeds show
    author: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(200))
    category_slug: Mapped[str | None] = mapped_column(String(120))
    language: Mapped[str] = mapped_column(String(16), default="vi")
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)

    status: Mapped[str] = mapped_column(String(16), default=BulletinStatus.QUEUED)
    # Every change (a correction, a withdrawal) is a new revision; a render writes only the
    # revision that is current, and records it here when its output is live.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    rendered_revision: Mapped[int] = mapped_column(Integer, default=0)
    # The revision whose citation rows (the `citations` table) are live: set with
    # rendered_revision when a render makes a revision live, and never lowered, unlike
    # rendered_revision, which a repair lowers to owe a render again: a page being
    # re-rendered stays on its documents' pages meanwhile. NULL: none rendered yet.
    cited_revision: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # of the current revision
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set while a render of the current revision is owed (the outbox): the reconciler
    # re-sends the message when this gets old. NULL when nothing is owed.
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(64))  # of the current revision

    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rendered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The agency's optional public notice, shown on the 410 page of a withdrawn bulletin.
    withdrawal_notice: Mapped[str | None] = mapped_column(Text)
    # The title folded for search (shared.slug.fold), so `ke hoach` finds `Kế hoạch`;
    # set with every revision's content.
    title_folded: Mapped[str | None] = mapped_column(Text)

    agency: Mapped[Agency] = relationship(lazy="joined")


class LegalDocument(Base):
    """A legal document some bulletin cites (shared.citations.Document), one row per key.

    Written by the render step the first time a revision cites it, never changed after: what
    bulletins cite it is in `citations`, so a document nobody cites any more is simply a row
    no listing shows."""

    __tablename__ = "documents"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)  # "qd-ttg-628-2020"
    doc_type: Mapped[str] = mapped_column(String(60))  # "Quyết định"
    number: Mapped[str] = mapped_column(String(40))  # "628"
    year: Mapped[int | None] = mapped_column(Integer)
    issuer: Mapped[str] = mapped_column(String(60))  # "QĐ-TTg"
    name: Mapped[str] = mapped_column(String(200))  # "Quyết định số 628/QĐ-TTg"
    issued_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def title(self) -> str:
        """The name with its date when known: "Quyết định số 628/QĐ-TTg ngày 11/05/2020"."""
        return titled(self.name, self.issued_on)


class Citation(Base):
    """One revision of a bulletin cites one document. The rows of the revision whose page is
    live (``bulletins.cited_revision``) are what the document's listing shows, so a
    correction moves the bulletin between document pages exactly when its new page goes live.

    `published_at` is the bulletin's at that revision, copied so that a document's listing
    walks its own index newest first (document, published_at, bulletin) and stops after N,
    however many bulletins cite the document: no join-then-sort."""

    __tablename__ = "citations"
    __table_args__ = (
        PrimaryKeyConstraint("bulletin_id", "revision", "document_key", name="pk_citations"),
        ForeignKeyConstraint(["bulletin_id"], ["bulletins.id"], name="fk_citations_bulletin"),
        ForeignKeyConstraint(["document_key"], ["documents.key"], name="fk_citations_document"),
        Index("ix_citation_listing", "document_key", "published_at", "bulletin_id"),
    )

    bulletin_id: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    document_key: Mapped[str] = mapped_column(String(120))
    position: Mapped[int] = mapped_column(Integer)  # order of first mention in the revision
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


class User(Base):
    """A person who writes an agency's bulletins in the web console (shared.users).

    Invited by an operator: the invite token is kept only as a SHA-256 digest (it is random,
    so no slow hash) until it is used; the password only as an argon2 hash.
    """

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id"))
    email: Mapped[str] = mapped_column(String(254), unique=True)  # NFC, casefolded, stripped
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))  # NULL until invite accepted
    invite_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    invite_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by an operator: the user cannot sign in, and their sessions stop working.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    agency: Mapped[Agency] = relationship(lazy="joined")


class ConsoleSession(Base):
    """A signed-in console session, server-side. The id is the SHA-256 digest of the raw
    cookie token: a read of this table gives nobody a usable cookie."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # absolute cap, however active


class SubscriptionState(enum.StrEnum):
    PENDING = "pending"  # asked for, intent not verified yet: gets nothing
    ACTIVE = "active"  # verified: gets every change of its topic until expires_at
    DENIED = "denied"  # the callback did not confirm (wrong challenge, an error)
    UNSUBSCRIBED = "unsubscribed"  # a verified unsubscribe


class Subscription(Base):
    """A WebSub subscriber of one feed (topic). One row per (topic, callback), as the spec
    identifies subscriptions; a new request for the pair supersedes an older one."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("topic", "callback", name="uq_subscription_topic_callback"),
        # Each feed build reads the active subscribers of its listing's three topics.
        Index("ix_subscription_topic_state", "topic", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(500))
    # Bounded so (topic, callback) stays well inside PostgreSQL's btree entry limit.
    callback: Mapped[str] = mapped_column(String(1000))
    state: Mapped[str] = mapped_column(String(16), default=SubscriptionState.PENDING)
    secret: Mapped[str | None] = mapped_column(String(200))  # of the active subscription
    lease_seconds: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The request being verified: its mode, lease and secret take effect only once the
    # callback confirms. `token` changes with every request, so a verification of an older
    # request (compare-and-set on it) can never overwrite a newer one. NULL: nothing pending.
    pending_mode: Mapped[str | None] = mapped_column(String(16))
    pending_lease: Mapped[int | None] = mapped_column(Integer)
    pending_secret: Mapped[str | None] = mapped_column(String(200))
    token: Mapped[str | None] = mapped_column(String(64))
    # The feed content owed (set by each feed build) and the last one delivered: a
    # difference is a delivery still owed (the reconciler can re-send it after a loss).
    wanted_fingerprint: Mapped[str | None] = mapped_column(String(64))
    delivered_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Since when a delivery has been owed; NULL once delivered or given up. The reconciler
    # re-sends deliveries owed for long with no attempt in sight (a message lost).
    owed_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # One delivery in flight per subscriber: the task (its Celery id, kept across retries)
    # holding it, until when. Other tasks for the subscriber step aside; the holder sends
    # the newest feed and follows up if a newer one became owed meanwhile.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_delivery_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
