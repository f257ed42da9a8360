"""shared.users: invitations, passwords, sign-in and sessions, on a SQLite database."""

from __future__ import annotations

import hashlib
import threading
import unicodedata
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher
from sqlalchemy import delete, func, select, update

from shared import users
from shared.db import create_schema, session_scope
from shared.models import Agency, ConsoleSession, User, utcnow
from shared.settings import Settings
from shared.users import (
    MIN_PASSWORD_LENGTH,
    UserError,
    accept_invite,
    authenticate,
    disable_user,
    end_session,
    invite,
    invited_user,
    list_users,
    normalise_email,
    session_user,
    start_session,
)

PASSWORD = "mật khẩu dài đủ"
IDLE = 8.0


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path, redis_url="memory://")
    create_schema(settings)
    with session_scope(settings) as session:
        session.add_all([Agency(slug="so-y-te", name="Sở Y tế"),
                         Agency(slug="so-khac", name="Sở Khác")])  # fmt: skip
    yield settings


def invited(settings: Settings, email: str = "nhung@soyte.gov.vn", slug: str = "so-y-te") -> str:
    with session_scope(settings) as session:
        return invite(session, email, slug, hours=72, name="Hồng Nhung")


def member(settings: Settings, email: str = "nhung@soyte.gov.vn") -> str:
    """An invited user who set PASSWORD; returns the (used) invite token."""
    token = invited(settings, email)
    with session_scope(settings) as session:
        assert accept_invite(session, token, PASSWORD) is not None
    return token


def signed_in(settings: Settings, email: str = "nhung@soyte.gov.vn") -> str:
    with session_scope(settings) as session:
        user = authenticate(session, email, PASSWORD)
        assert user is not None
        token, _row = start_session(session, user, idle_hours=IDLE)
    return token


def current(settings: Settings, token: str) -> User | None:
    with session_scope(settings) as session:
        found = session_user(session, token, idle_hours=IDLE)
    return None if found is None else found[1]


def test_email_addresses_are_stored_nfc_stripped_and_casefolded(settings: Settings) -> None:
    assert normalise_email("  Nhung@SoYTe.gov.VN \n") == "nhung@soyte.gov.vn"
    token = invited(settings, " Nhung@SoYTe.gov.VN ")
    with session_scope(settings) as session:
        user = invited_user(session, token)
        assert user is not None and user.email == "nhung@soyte.gov.vn"
        assert user.name == "Hồng Nhung" and user.agency.slug == "so-y-te"
        assert user.password_hash is None


def test_only_digests_of_tokens_are_stored(settings: Settings) -> None:
    token = invited(settings)
    with session_scope(settings) as session:
        user = session.scalars(select(User)).one()
        assert user.invite_hash == hashlib.sha256(token.encode()).hexdigest()
    accept(settings, token)
    cookie = signed_in(settings)
    with session_scope(settings) as session:
        row = session.scalars(select(ConsoleSession)).one()
        assert row.id == hashlib.sha256(cookie.encode()).hexdigest()
        assert cookie not in (row.id, row.csrf_token) and len(row.csrf_token) >= 32


def accept(settings: Settings, token: str, password: str = PASSWORD) -> User | None:
    with session_scope(settings) as session:
        return accept_invite(session, token, password)


def test_an_invite_sets_a_password_once(settings: Settings) -> None:
    token = invited(settings)
    with pytest.raises(UserError, match=str(MIN_PASSWORD_LENGTH)):
        accept(settings, token, "x" * (MIN_PASSWORD_LENGTH - 1))
    user = accept(settings, token)
    assert user is not None and user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert accept(settings, token, "another password") is None  # used up
    with session_scope(settings) as session:
        assert invited_user(session, token) is None
        assert authenticate(session, "NHUNG@soyte.gov.vn", PASSWORD) is not None
        assert authenticate(session, "nhung@soyte.gov.vn", "another password") is None


def test_two_simultaneous_uses_of_one_invite_set_one_password(settings: Settings) -> None:
    token = invited(settings)
    start = threading.Barrier(2)
    results: list[User | None] = []

    def use(password: str) -> None:
        start.wait(timeout=30)
        results.append(accept(settings, token, password))

    threads = [threading.Thread(target=use, args=(f"{PASSWORD} {n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and sum(r is not None for r in results) == 1
    with session_scope(settings) as session:
        works = [authenticate(session, "nhung@soyte.gov.vn", f"{PASSWORD} {n}") for n in (1, 2)]
    assert sum(w is not None for w in works) == 1


def test_an_expired_invite_does_not_work(settings: Settings) -> None:
    token = invited(settings)
    with session_scope(settings) as session:
        session.execute(update(User).values(invite_expires_at=utcnow() - timedelta(seconds=1)))
    with session_scope(settings) as session:
        assert invited_user(session, token) is None
    assert accept(settings, token) is None


def test_a_reinvite_voids_the_old_link_and_keeps_the_password_until_a_new_one(
    settings: Settings,
) -> None:
    member(settings)
    old = invited(settings)
    new = invited(settings)
    assert old != new
    with session_scope(settings) as session:
        assert invited_user(session, old) is None and invited_user(session, new) is not None
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is not None
        assert session.scalar(select(func.count()).select_from(User)) == 1
    cookie = signed_in(settings)
    assert accept(settings, new, "a brand new password") is not None
    assert current(settings, cookie) is None  # setting a password ends the other sessions
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is None
        assert authenticate(session, "nhung@soyte.gov.vn", "a brand new password") is not None


def test_a_user_of_another_agency_or_an_unknown_agency_is_refused(settings: Settings) -> None:
    invited(settings)
    with pytest.raises(UserError, match="another agency"):
        invited(settings, "Nhung@soyte.gov.vn", "so-khac")
    with pytest.raises(UserError, match="no agency with the slug 'khong-co'"):
        invited(settings, "ai@x.vn", "khong-co")
    with pytest.raises(UserError, match="not an e-mail address"):
        invited(settings, "khong-phai-thu", "so-y-te")


def test_wrong_or_unknown_credentials_sign_nobody_in(settings: Settings) -> None:
    member(settings)
    invited(settings, "chua-dat@soyte.gov.vn")  # invited, no password yet
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD + "x") is None
        assert authenticate(session, "khong-ai@soyte.gov.vn", PASSWORD) is None
        assert authenticate(session, "chua-dat@soyte.gov.vn", "") is None
        assert authenticate(session, "nhung@soyte.gov.vn", "x" * 100_000) is None


def test_an_unknown_address_costs_one_argon2_verification_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(users, "_hasher", Counting())
    with session_scope(settings) as session:
        assert authenticate(session, "khong-ai@soyte.gov.vn", PASSWORD) is None
    assert len(verified) == 1 and verified[0].startswith("$argon2id$")


def test_an_old_hash_is_replaced_at_sign_in(settings: Settings) -> None:
    member(settings)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with session_scope(settings) as session:
        session.execute(update(User).values(password_hash=weak))
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is not None
    with session_scope(settings) as session:
        stored = session.scalars(select(User.password_hash)).one()
    assert stored is not None and stored != weak
    assert not users._hasher.check_needs_rehash(stored)


def test_a_session_names_its_user_until_signed_out(settings: Settings) -> None:
    member(settings)
    cookie = signed_in(settings)
    user = current(settings, cookie)
    assert user is not None and user.email == "nhung@soyte.gov.vn"
    assert user.last_sign_in_at is not None
    assert current(settings, cookie + "x") is None
    with session_scope(settings) as session:
        found = session_user(session, cookie, idle_hours=IDLE)
        assert found is not None
        row, _ = found
        assert row.expires_at - row.created_at == timedelta(hours=7 * IDLE)
        end_session(session, cookie)
    assert current(settings, cookie) is None


def test_a_session_ends_when_idle_or_at_its_cap(settings: Settings) -> None:
    member(settings)
    idle, capped, fresh = signed_in(settings), signed_in(settings), signed_in(settings)
    now = utcnow()
    with session_scope(settings) as session:
        session.get_one(ConsoleSession, users._digest(idle)).last_seen_at = now - timedelta(
            hours=IDLE, minutes=1
        )
        session.get_one(ConsoleSession, users._digest(capped)).expires_at = now
    assert current(settings, idle) is None and current(settings, capped) is None
    assert current(settings, fresh) is not None
    with session_scope(settings) as session:  # the ended ones are gone
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 1


def test_last_seen_is_written_at_most_once_a_minute(settings: Settings) -> None:
    member(settings)
    cookie = signed_in(settings)
    earlier = utcnow() - timedelta(seconds=30)
    with session_scope(settings) as session:
        session.get_one(ConsoleSession, users._digest(cookie)).last_seen_at = earlier
    assert current(settings, cookie) is not None
    with session_scope(settings) as session:
        assert session.get_one(ConsoleSession, users._digest(cookie)).last_seen_at == earlier
        session.get_one(ConsoleSession, users._digest(cookie)).last_seen_at = earlier - timedelta(
            seconds=31
        )
    assert current(settings, cookie) is not None
    with session_scope(settings) as session:
        seen = session.get_one(ConsoleSession, users._digest(cookie)).last_seen_at
    assert seen > earlier


def test_a_disabled_user_cannot_sign_in_and_their_sessions_end(settings: Settings) -> None:
    member(settings)
    cookie = signed_in(settings)
    with session_scope(settings) as session:
        disable_user(session, " NHUNG@soyte.gov.vn")
    assert current(settings, cookie) is None
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is None
        assert session.scalar(select(func.count()).select_from(ConsoleSession)) == 0
        with pytest.raises(UserError, match="no user"):
            disable_user(session, "khong-ai@soyte.gov.vn")
    # Invited again: enabled, but the old password stays void until a new one is set.
    token = invited(settings)
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is None
    assert accept(settings, token, "a brand new password") is not None


def test_a_disabled_agency_s_users_cannot_sign_in_and_their_sessions_stop(
    settings: Settings,
) -> None:
    member(settings)
    pending = invited(settings, "moi@soyte.gov.vn")
    cookie = signed_in(settings)
    with session_scope(settings) as session:
        session.execute(update(Agency).where(Agency.slug == "so-y-te").values(disabled_at=utcnow()))
    assert current(settings, cookie) is None
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is None
        assert invited_user(session, pending) is None
    assert accept(settings, pending) is None
    with session_scope(settings) as session:  # enabled again: the session works again
        session.execute(update(Agency).values(disabled_at=None))
    assert current(settings, cookie) is not None


def test_users_are_listed_by_agency(settings: Settings) -> None:
    invited(settings, "b@soyte.gov.vn")
    invited(settings, "a@soyte.gov.vn")
    invited(settings, "c@sokhac.gov.vn", "so-khac")
    with session_scope(settings) as session:
        assert [u.email for u in list_users(session)] == [
            "c@sokhac.gov.vn", "a@soyte.gov.vn", "b@soyte.gov.vn",
        ]  # fmt: skip
        assert [u.email for u in list_users(session, "so-khac")] == ["c@sokhac.gov.vn"]
        with pytest.raises(UserError, match="no agency"):
            list_users(session, "khong-co")


# -- races: writes guarded so a concurrent change is neither an error nor overwritten ----------


def test_a_session_deleted_meanwhile_is_no_error_when_its_last_seen_is_due(
    settings: Settings,
) -> None:
    """Sign-out in another tab (or disable_user) deletes the row after this request loaded it:
    the last-seen write then changes nothing, and raises nothing."""
    member(settings)
    cookie = signed_in(settings)
    digest = users._digest(cookie)
    with session_scope(settings) as session:
        session.get_one(ConsoleSession, digest).last_seen_at = utcnow() - timedelta(minutes=5)
    with session_scope(settings) as session:
        loaded = session.get_one(ConsoleSession, digest)  # this request's copy of the row
        # Another request's sign-out, behind this session's back (its copy stays loaded).
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == digest)
                        .execution_options(synchronize_session=False))  # fmt: skip
        found = session_user(session, cookie, idle_hours=IDLE)
        assert found is not None and found[0] is loaded  # this request still ends normally
    assert current(settings, cookie) is None  # and the session stays ended


def test_an_expired_session_deleted_twice_is_no_error(settings: Settings) -> None:
    member(settings)
    cookie = signed_in(settings)
    digest = users._digest(cookie)
    with session_scope(settings) as session:
        session.get_one(ConsoleSession, digest).expires_at = utcnow()
    with session_scope(settings) as session:
        session.get_one(ConsoleSession, digest)
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == digest)
                        .execution_options(synchronize_session=False))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even SQLAlchemy's "0 rows deleted" warning
            assert session_user(session, cookie, idle_hours=IDLE) is None
    assert current(settings, cookie) is None


def test_a_rehash_at_sign_in_never_overwrites_a_password_set_meanwhile(
    settings: Settings,
) -> None:
    """A sign-in with an old hash and the re-invited user setting a new password at the same
    moment: the new password stands (the rehash is guarded by the hash it replaces)."""
    member(settings)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with session_scope(settings) as session:
        session.execute(update(User).values(password_hash=weak))
    newer = users._hasher.hash("mật khẩu mới hoàn toàn")
    with session_scope(settings) as session:
        loaded = session.scalars(select(User)).one()  # this sign-in's copy: the weak hash
        session.execute(update(User).values(password_hash=newer)
                        .execution_options(synchronize_session=False))  # fmt: skip
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is loaded
        assert loaded.password_hash == weak  # what it verified against
    with session_scope(settings) as session:
        assert session.scalars(select(User.password_hash)).one() == newer


def test_a_rehash_leaves_the_user_usable_and_writes_once(settings: Settings) -> None:
    member(settings)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with session_scope(settings) as session:
        session.execute(update(User).values(password_hash=weak))
    with session_scope(settings) as session:
        user = authenticate(session, "nhung@soyte.gov.vn", PASSWORD)
        assert user is not None and user.password_hash != weak
        assert not session.dirty  # the new hash is written already, not pending
        token, _ = start_session(session, user, idle_hours=IDLE)
    assert current(settings, token) is not None


# -- Unicode: a Vietnamese passphrase typed on keyboards that compose differently --------------

NFC_PASSWORD = unicodedata.normalize("NFC", "Kế hoạch phòng chống lũ của bệnh viện")
NFD_PASSWORD = unicodedata.normalize("NFD", NFC_PASSWORD)
# Typed with combining marks in typing order, some letters left composed: "ệ" as e, the
# circumflex, then the dot below (canonical NFD puts the dot below first). Neither form above.
TYPED_PASSWORD = NFC_PASSWORD.replace("ệ", "e\u0302\u0323").replace("ế", "e\u0302\u0301")


@pytest.mark.parametrize("set_as", [NFC_PASSWORD, NFD_PASSWORD, TYPED_PASSWORD])
def test_a_password_works_however_its_diacritics_are_composed(
    settings: Settings, set_as: str
) -> None:
    assert len({NFC_PASSWORD, NFD_PASSWORD, TYPED_PASSWORD}) == 3
    token = invited(settings)
    with session_scope(settings) as session:
        assert accept_invite(session, token, set_as) is not None
    for typed in (NFC_PASSWORD, NFD_PASSWORD, TYPED_PASSWORD):
        assert users.normalise_password(typed) == NFC_PASSWORD
        with session_scope(settings) as session:
            assert authenticate(session, "nhung@soyte.gov.vn", typed) is not None, typed
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", NFC_PASSWORD[:-1]) is None


def test_a_hash_of_a_decomposed_password_from_before_normalising_still_works_and_is_renewed(
    settings: Settings,
) -> None:
    member(settings)
    with session_scope(settings) as session:  # as accept_invite hashed before the fix
        session.execute(update(User).values(password_hash=users._hasher.hash(NFD_PASSWORD)))
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", NFD_PASSWORD) is not None
    # Renewed as the NFC form: now any composition works.
    with session_scope(settings) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", NFC_PASSWORD) is not None
        stored = session.scalars(select(User.password_hash)).one()
    assert stored is not None and users._hasher.verify(stored, NFC_PASSWORD)


def test_password_lengths_are_counted_on_the_normalised_text(settings: Settings) -> None:
    # Nine letters in NFC (eighteen code points decomposed): too short, however typed.
    short = unicodedata.normalize("NFD", "ệệệệệệệệệ")
    assert len(short) >= MIN_PASSWORD_LENGTH > len(unicodedata.normalize("NFC", short))
    token = invited(settings)
    with session_scope(settings) as session, pytest.raises(UserError, match="at least"):
        accept_invite(session, token, short)
    # At the upper limit in NFC, over it decomposed: accepted, and signs in either way.
    longest = "ệ" * users.MAX_PASSWORD_LENGTH
    with session_scope(settings) as session:
        assert accept_invite(session, token, unicodedata.normalize("NFD", longest)) is not None
    for typed in (longest, unicodedata.normalize("NFD", longest)):
        with session_scope(settings) as session:
            assert authenticate(session, "nhung@soyte.gov.vn", typed) is not None
    with session_scope(settings) as session, pytest.raises(UserError, match="at most"):
        accept_invite(session, invited(settings), longest + "a")


@pytest.mark.parametrize("typed", [PASSWORD, NFD_PASSWORD])
def test_a_wrong_password_costs_as_many_verifications_with_or_without_the_user(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, typed: str
) -> None:
    """Timing says nothing about whether an address has an account, however it is typed."""
    member(settings)
    verified: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(users, "_hasher", Counting())
    counts: list[int] = []
    for email in ("nhung@soyte.gov.vn", "khong-ai@soyte.gov.vn"):
        verified.clear()
        with session_scope(settings) as session:
            assert authenticate(session, email, typed + "x") is None
        counts.append(len(verified))
    assert counts[0] == counts[1] == (1 if typed == PASSWORD else 2)
