"""Console users: invitations, passwords, sign-in and server-side sessions.

An operator invites a user for an agency (`bantin user invite`); the one-time link carries a
random token kept only as its SHA-256 digest, and it works once: accepting it is one guarded
UPDATE, so of two simultaneous uses exactly one wins. Passwords are kept as argon2 hashes
(argon2-cffi's defaults) of the password's NFC form: Vietnamese input methods differ in
how they compose diacritics (Unikey's "Unicode tổ hợp" types decomposed letters, most others
composed ones), and a password set on one machine must work on another (NIST SP 800-63B
5.1.1.2). A session cookie carries another random token, also kept only as
its digest; a session ends after `idle_hours` without use, or 7 × `idle_hours` after sign-in
whatever the use. A disabled user, or a user of a disabled agency, cannot sign in, and every
session of theirs stops working at its next request.

The functions only flush: the caller's transaction commits (or rolls back) the change.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from datetime import timedelta
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from shared.models import Agency, ConsoleSession, User, utcnow
from shared.sanitize import clean_text

MIN_PASSWORD_LENGTH = 10
# argon2 takes any length, but hashing megabytes per request is a cheap denial of service.
MAX_PASSWORD_LENGTH = 1000
MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
SESSION_CAP_FACTOR = 7  # a session's absolute lifetime, in idle periods
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often

_hasher = PasswordHasher()


class UserError(ValueError):
    """A refused user operation; the message is plain English, for the CLI."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@cache
def _dummy_hash() -> str:
    """A hash of nothing anyone knows: verified against when there is no such user, so the
    time a sign-in takes does not tell whether the address has an account."""
    return _hasher.hash(secrets.token_urlsafe(32))


def normalise_email(email: str) -> str:
    """The form addresses are stored and looked up in: NFC, stripped, casefolded."""
    folded = unicodedata.normalize("NFC", email).strip().casefold()
    return unicodedata.normalize("NFC", folded)  # casefolding can undo the composition


def _valid_email(email: str) -> str:
    address = normalise_email(email)
    local, at, domain = address.rpartition("@")
    if (not at or not local or "." not in domain or domain.startswith(".")
            or domain.endswith(".") or any(c.isspace() for c in address)):  # fmt: skip
        raise UserError(f"not an e-mail address: {email!r}")
    if len(address) > MAX_EMAIL_LENGTH:
        raise UserError(f"an e-mail address has at most {MAX_EMAIL_LENGTH} characters")
    return address


def _agency(session: Session, slug: str) -> Agency:
    agency = session.scalar(select(Agency).where(Agency.slug == slug))
    if agency is None:
        raise UserError(f"no agency with the slug {slug!r}")
    return agency


def _by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def _end_sessions(session: Session, user_id: int) -> None:
    session.execute(
        delete(ConsoleSession)
        .where(ConsoleSession.user_id == user_id)
        .execution_options(synchronize_session=False)
    )


def invite(
    session: Session, email: str, agency_slug: str, *, hours: float, name: str | None = None
) -> str:
    """Invite a user of the agency (a new one, or again an existing one of the same agency):
    returns the raw token of a link that works once, for `hours`. An earlier link is void.

    A re-invited user keeps a password they have until they set a new one with the link; a
    re-invited disabled user is enabled, but must set a new password (the old one stays void).
    """
    address = _valid_email(email)
    agency = _agency(session, agency_slug)
    cleaned = clean_text(name).strip() if name is not None else ""
    if len(cleaned) > MAX_NAME_LENGTH:
        raise UserError(f"a name has at most {MAX_NAME_LENGTH} characters")
    user = _by_email(session, address)
    if user is not None and user.agency_id != agency.id:
        raise UserError(f"{address} is a user of another agency ({user.agency.slug})")
    if user is None:
        user = User(agency_id=agency.id, email=address, created_at=utcnow())
        session.add(user)
    elif user.disabled_at is not None:
        user.disabled_at, user.password_hash = None, None
    if cleaned:
        user.name = cleaned
    token = secrets.token_urlsafe(32)
    user.invite_hash = _digest(token)
    user.invite_expires_at = utcnow() + timedelta(hours=hours)
    session.flush()
    return token


def invite_link(ingest_url: str, token: str) -> str:
    """The one-time sign-in link of an invitation: the console's set-password page."""
    return f"{ingest_url.rstrip('/')}/console/invite/{token}"


def invited_user(session: Session, token: str) -> User | None:
    """The user a link's token invites, while it is valid: unused, unexpired, the user and
    the agency enabled. None otherwise."""
    return session.scalar(
        select(User)
        .join(Agency, Agency.id == User.agency_id)
        .where(
            User.invite_hash == _digest(token),
            User.invite_expires_at > utcnow(),
            User.disabled_at.is_(None),
            Agency.disabled_at.is_(None),
        )
    )


def normalise_password(password: str) -> str:
    """The form a password is hashed, verified and counted in: NFC (see the module's doc).
    A form should count and compare what it was typed in this form too."""
    return unicodedata.normalize("NFC", password)


def _check_password(password: str) -> None:
    """Lengths of the normalised text: what a person counts, however it was typed."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def accept_invite(session: Session, token: str, password: str) -> User | None:
    """Set the invited user's password and use up the link; None if the link is not valid
    (used, expired, void, or the user or agency disabled). The user's other sessions end.

    One guarded UPDATE: of two simultaneous uses of one link, exactly one sets a password.
    """
    password = normalise_password(password)
    _check_password(password)
    user = invited_user(session, token)
    if user is None:
        return None
    hashed = _hasher.hash(password)  # slow: before the UPDATE, which holds the write lock
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(User)
        .where(
            User.id == user.id,
            User.invite_hash == _digest(token),
            User.invite_expires_at > utcnow(),
            User.disabled_at.is_(None),
        )
        .values(password_hash=hashed, invite_hash=None, invite_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None  # used (or voided) meanwhile by another request
    _end_sessions(session, user.id)
    session.refresh(user)
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with this address and password, if they may sign in; None otherwise.

    Verifies the password's NFC form: one argon2 verification whatever the outcome, but for
    a password typed other than in NFC that fails, which is tried as typed too (a hash set
    before passwords were normalised). A hash made with older parameters, or of a password not
    in NFC, is replaced by the current kind.
    """
    typed, password = password, normalise_password(password)
    if len(password) > MAX_PASSWORD_LENGTH:
        return None
    user = _by_email(session, email)
    if user is None or user.password_hash is None:
        _verifies(_dummy_hash(), password)
        if typed != password:  # as many verifications as a known user's wrong password
            _verifies(_dummy_hash(), typed)
        return None
    old = user.password_hash
    if _verifies(old, password):
        renew = _hasher.check_needs_rehash(old)
    elif typed != password and _verifies(old, typed):
        renew = True
    else:
        return None
    if user.disabled_at is not None or user.agency.disabled_at is not None:
        return None
    if renew:
        _renew_hash(session, user, old, _hasher.hash(password))
    return user


def _verifies(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def _renew_hash(session: Session, user: User, old: str, new: str) -> None:
    """Guarded by the hash it replaces: a password set meanwhile (a re-invited user using
    the link) is never overwritten, and that is no error."""
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(User)
        .where(User.id == user.id, User.password_hash == old)
        .values(password_hash=new)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        set_committed_value(user, "password_hash", new)  # as stored; nothing left to flush


def start_session(session: Session, user: User, *, idle_hours: float) -> tuple[str, ConsoleSession]:
    """A new session of a signed-in user: the raw cookie token (shown once) and its row,
    with a fresh CSRF token. The user's sessions that ended are cleared away."""
    now = utcnow()
    session.execute(
        delete(ConsoleSession)
        .where(ConsoleSession.user_id == user.id, ConsoleSession.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        id=_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
        expires_at=now + timedelta(hours=SESSION_CAP_FACTOR * idle_hours),
    )
    session.add(row)
    user.last_sign_in_at = now
    session.flush()
    return token, row


def session_user(
    session: Session, token: str, *, idle_hours: float
) -> tuple[ConsoleSession, User] | None:
    """The session a cookie's token names and its user, while it is valid; None if unknown,
    idle for longer than `idle_hours`, past its absolute end, or its user or agency disabled.
    An ended session's row is deleted."""
    row = session.get(ConsoleSession, _digest(token))
    if row is None:
        return None
    now = utcnow()
    # Core statements by id, not ORM writes of the loaded row: another request may have
    # deleted it meanwhile (sign-out in another tab, disable_user, this same expiry), and
    # that must change nothing rather than raise.
    if now >= row.expires_at or now - row.last_seen_at > timedelta(hours=idle_hours):
        session.execute(
            delete(ConsoleSession)
            .where(ConsoleSession.id == row.id)
            .execution_options(synchronize_session=False)
        )
        session.expunge(row)
        return None
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None or user.agency.disabled_at is not None:
        return None
    if now - row.last_seen_at >= SEEN_EVERY:  # not a write on every request
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == row.id)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        set_committed_value(row, "last_seen_at", now)
    return row, user


def end_session(session: Session, token: str) -> None:
    """Sign out: the session is deleted (nothing if there is none)."""
    session.execute(
        delete(ConsoleSession)
        .where(ConsoleSession.id == _digest(token))
        .execution_options(synchronize_session=False)
    )


def disable_user(session: Session, email: str) -> None:
    """The user can no longer sign in; their sessions and any pending link end now."""
    user = _by_email(session, email)
    if user is None:
        raise UserError(f"no user with the e-mail address {normalise_email(email)!r}")
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    user.invite_hash, user.invite_expires_at = None, None
    session.flush()
    _end_sessions(session, user.id)


def list_users(session: Session, agency_slug: str | None = None) -> list[User]:
    """Users by agency slug then address; only the agency's with `agency_slug`."""
    query = select(User).join(Agency, Agency.id == User.agency_id)
    if agency_slug is not None:
        query = query.where(User.agency_id == _agency(session, agency_slug).id)
    return list(session.scalars(query.order_by(Agency.slug, User.email)))
