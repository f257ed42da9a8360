"""`bantin user`: inviting, listing and disabling console users, as an operator types it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from services.cli import main as bantin
from shared.db import session_scope
from shared.settings import Settings, get_settings
from shared.users import accept_invite, authenticate, invited_user

PASSWORD = "mật khẩu dài đủ"


@pytest.fixture
def settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("BANTIN_REDIS_URL", "memory://")
    monkeypatch.setenv("BANTIN_INGEST_PUBLIC_URL", "https://api.bantin.example/")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def agencies(settings: Settings) -> Settings:
    ok("agency", "create", "Sở Y tế", "--slug", "so-y-te")
    ok("agency", "create", "Sở Khác", "--slug", "so-khac")
    return settings


def run(*args: str) -> Result:
    return CliRunner().invoke(bantin, list(args))


def ok(*args: str) -> Result:
    done = run(*args)
    assert done.exit_code == 0, done.output
    return done


def fails(*args: str) -> str:
    """A one-line error and exit status 1."""
    done = run(*args)
    assert done.exit_code == 1 and done.exception is not None, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.output
    return lines[0]


def token_of(link: str) -> str:
    prefix = "https://api.bantin.example/console/invite/"
    assert link.startswith(prefix)
    return link.removeprefix(prefix)


def test_invite_prints_the_link_alone_as_the_last_line(agencies: Settings) -> None:
    done = ok("user", "invite", " Nhung@SoYTe.gov.vn ", "--agency", "so-y-te",
              "--name", "Hồng Nhung")  # fmt: skip
    link = done.stdout.splitlines()[-1]
    assert done.stdout == link + "\n"  # stdout is the link alone: `| tail -n 1`
    assert "works once, until " in done.stderr and "nhung@soyte.gov.vn" in done.stderr
    with session_scope(agencies) as session:
        user = invited_user(session, token_of(link))
        assert user is not None and user.name == "Hồng Nhung" and user.agency.slug == "so-y-te"
        assert accept_invite(session, token_of(link), PASSWORD) is not None
    with session_scope(agencies) as session:
        assert authenticate(session, "nhung@soyte.gov.vn", PASSWORD) is not None


def test_a_reinvite_voids_the_earlier_link(agencies: Settings) -> None:
    first = ok("user", "invite", "a@soyte.gov.vn", "--agency", "so-y-te").stdout.strip()
    second = ok("user", "invite", "a@soyte.gov.vn", "--agency", "so-y-te").stdout.strip()
    with session_scope(agencies) as session:
        assert invited_user(session, token_of(first)) is None
        assert invited_user(session, token_of(second)) is not None


def test_invite_refuses_an_unknown_agency_and_another_agency_s_user(agencies: Settings) -> None:
    assert fails("user", "invite", "a@x.vn", "--agency", "khong-co") == (
        "Error: no agency with the slug 'khong-co'"
    )
    ok("user", "invite", "a@x.vn", "--agency", "so-y-te")
    assert fails("user", "invite", "A@x.vn", "--agency", "so-khac") == (
        "Error: a@x.vn is a user of another agency (so-y-te)"
    )
    assert "not an e-mail address" in fails("user", "invite", "a", "--agency", "so-y-te")


def test_list_shows_each_user_s_status_as_a_table_and_as_json(agencies: Settings) -> None:
    assert "No users yet" in ok("user", "list").stdout
    link = ok("user", "invite", "b@soyte.gov.vn", "--agency", "so-y-te").stdout.strip()
    ok("user", "invite", "a@soyte.gov.vn", "--agency", "so-y-te", "--name", "Hồng Nhung")
    ok("user", "invite", "c@sokhac.gov.vn", "--agency", "so-khac")
    with session_scope(agencies) as session:
        assert accept_invite(session, token_of(link), PASSWORD) is not None
    ok("user", "disable", "c@sokhac.gov.vn")
    table = ok("user", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["EMAIL", "NAME", "AGENCY", "STATUS"]
    assert [line.split()[0] for line in table[1:]] == [
        "c@sokhac.gov.vn", "a@soyte.gov.vn", "b@soyte.gov.vn",
    ]  # fmt: skip
    assert " disabled " in table[1] and " invited " in table[2] and " active " in table[3]
    assert "Hồng Nhung" in table[2]
    document = json.loads(ok("user", "list", "--agency", "so-y-te", "--json").stdout)
    assert [(u["email"], u["status"]) for u in document["users"]] == [
        ("a@soyte.gov.vn", "invited"), ("b@soyte.gov.vn", "active"),
    ]  # fmt: skip
    assert document["users"][0]["name"] == "Hồng Nhung"
    assert fails("user", "list", "--agency", "khong-co") == (
        "Error: no agency with the slug 'khong-co'"
    )


def test_disable_stops_sign_in(agencies: Settings) -> None:
    link = ok("user", "invite", "a@soyte.gov.vn", "--agency", "so-y-te").stdout.strip()
    with session_scope(agencies) as session:
        assert accept_invite(session, token_of(link), PASSWORD) is not None
    assert "can no longer sign in" in ok("user", "disable", "A@soyte.gov.vn").stdout
    with session_scope(agencies) as session:
        assert authenticate(session, "a@soyte.gov.vn", PASSWORD) is None
    assert fails("user", "disable", "khong-ai@soyte.gov.vn") == (
        "Error: no user with the e-mail address 'khong-ai@soyte.gov.vn'"
    )
