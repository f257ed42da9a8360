"""`bantin agency` and `bantin key`: what an operator types, and what it does to the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from services.cli import main as bantin
from shared.agencies import KEY_PREFIX, hash_key, key_owner
from shared.db import create_schema, session_scope
from shared.models import Agency, ApiKey
from shared.settings import Settings, get_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("BANTIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BANTIN_REDIS_URL", "memory://")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def run(*args: str) -> Result:
    return CliRunner().invoke(bantin, list(args))


def ok(*args: str) -> str:
    done = run(*args)
    assert done.exit_code == 0, done.output
    return done.output


def fails(*args: str) -> str:
    """A one-line error and a non-zero exit."""
    done = run(*args)
    assert done.exit_code == 1 and done.exception is not None, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.output
    return lines[0]


def works(settings: Settings, key: str) -> bool:
    with session_scope(settings) as session:
        owner = key_owner(session, key)
    return owner is not None and not owner.disabled


def test_list_shows_every_agency_as_a_table_and_as_json(settings: Settings) -> None:
    assert "No agencies yet" in ok("agency", "list")
    ok("agency", "create", "Sở Nội vụ", "--slug", "so-noi-vu")
    ok("agency", "create", "Sở Tài chính")
    ok("agency", "disable", "so-tai-chinh")
    table = ok("agency", "list").splitlines()
    assert table[0].split()[:4] == ["SLUG", "NAME", "STATUS", "KEYS"] and "CREATED" in table[0]
    assert table[1].split()[0] == "so-noi-vu" and " active " in table[1]
    assert table[2].split()[0] == "so-tai-chinh" and " disabled " in table[2]
    document = json.loads(ok("agency", "list", "--json"))
    first, second = document["agencies"]
    assert first["slug"] == "so-noi-vu" and first["name"] == "Sở Nội vụ"
    assert first["status"] == "active" and first["active_keys"] == 1
    assert first["bulletins"] == {"queued": 0, "scheduled": 0, "published": 0,
                                  "withdrawn": 0, "failed": 0}  # fmt: skip
    assert second["status"] == "disabled" and second["disabled_at"] is not None


def test_create_prints_the_key_once_as_the_last_line(settings: Settings) -> None:
    key = ok("agency", "create", "Sở A", "--slug", "so-a").splitlines()[-1]
    assert key.startswith(KEY_PREFIX) and works(settings, key)
    assert "already exists" in fails("agency", "create", "Sở B", "--slug", "so-a")
    assert "reserved" in fails("agency", "create", "Feeds", "--slug", "feeds")


def test_rotate_key_revokes_the_others_unless_kept(settings: Settings) -> None:
    first = ok("agency", "create", "Sở A", "--slug", "so-a").splitlines()[-1]
    kept = ok("agency", "rotate-key", "so-a", "--keep-old").splitlines()
    second = kept[-1]
    assert second.startswith(KEY_PREFIX) and "stay active" in kept[0]
    assert works(settings, first) and works(settings, second)
    rotated = ok("agency", "rotate-key", "so-a").splitlines()
    third = rotated[-1]
    assert "revoked keys 1, 2" in rotated[0]
    assert works(settings, third) and not works(settings, first) and not works(settings, second)
    listed = json.loads(ok("key", "list", "--agency", "so-a", "--json"))["keys"]
    assert [k["revoked_at"] is None for k in listed] == [False, False, True]
    assert listed[2]["prefix"] == third[:16]


def test_disable_and_enable_guard_their_state(settings: Settings) -> None:
    key = ok("agency", "create", "Sở A", "--slug", "so-a").splitlines()[-1]
    assert "refuses its keys" in ok("agency", "disable", "so-a")
    with session_scope(settings) as session:
        owner = key_owner(session, key)
    assert owner is not None and owner.disabled  # the key is right, the agency refused
    assert "already disabled (since " in fails("agency", "disable", "so-a")
    ok("agency", "enable", "so-a")
    assert works(settings, key)
    assert "already active" in fails("agency", "enable", "so-a")


@pytest.mark.parametrize(
    "args",
    [
        ("agency", "rotate-key", "khong-co"),
        ("agency", "disable", "khong-co"),
        ("agency", "enable", "khong-co"),
        ("key", "list", "--agency", "khong-co"),
        ("key", "create", "--agency", "khong-co"),
    ],
)
def test_an_unknown_slug_is_a_one_line_error(settings: Settings, args: tuple[str, ...]) -> None:
    assert fails(*args) == "Error: no agency with the slug 'khong-co'"


def test_a_key_without_prefix_is_listed_and_revoked_by_its_id(settings: Settings) -> None:
    create_schema(settings)
    with session_scope(settings) as session:  # a key issued before prefixes were kept
        agency = Agency(slug="so-cu", name="Sở cũ")
        agency.api_keys.append(ApiKey(key_hash=hash_key("bt_legacy"), prefix=None))
        session.add(agency)
        session.flush()
        key_id = agency.api_keys[0].id
    table = ok("key", "list", "--agency", "so-cu")
    assert "revoke by id" in table and " active " in table
    assert works(settings, "bt_legacy")
    assert f"revoked key {key_id} (no prefix) of so-cu" in ok("key", "revoke", str(key_id))
    assert not works(settings, "bt_legacy")
    assert "revoked" in ok("key", "list", "--agency", "so-cu").splitlines()[1]
    assert fails("key", "revoke", str(key_id)) == f"Error: key {key_id} is already revoked"
    assert fails("key", "revoke", "4242") == "Error: no key with the id 4242"
    assert "at least 8" in fails("key", "revoke", "bt_")


def test_revoke_by_prefix_still_works(settings: Settings) -> None:
    key = ok("agency", "create", "Sở A", "--slug", "so-a").splitlines()[-1]
    assert "revoked key 1" in ok("key", "revoke", key[:16])
    assert not works(settings, key)
    assert "0 active keys start with" in fails("key", "revoke", key[:16])


def test_agency_commands_never_upgrade_a_database_in_use(settings: Settings) -> None:
    """A newer `bantin` run against production must not change the tables under the older
    processes: a database behind the newest revision is refused with the command to run."""
    from alembic import command

    from shared.db import engine_for
    from shared.migrations import alembic_config, current, head

    with engine_for(settings).begin() as connection:
        command.upgrade(alembic_config(connection), "0002_agency_disabled_at")
    assert current(settings) != head()
    line = fails("agency", "list")
    assert "bantin db upgrade" in line and "0002_agency_disabled_at" in line
    assert current(settings) == "0002_agency_disabled_at"  # untouched
    ok("db", "upgrade")
    ok("agency", "list")


def test_an_empty_database_gets_its_schema_on_the_first_agency(settings: Settings) -> None:
    assert "Created agency" in ok("agency", "create", "Sở Tư pháp", "--slug", "so-tu-phap")
