"""`bantin backup` / `bantin restore`: a consistent copy while a writer writes, put back into
a new data directory; and the refusals that keep a restore from hurting a running system."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import select

from services.cli import db as db_module
from services.cli import main as bantin
from services.cli.db import make_backup, restore_backup
from shared.agencies import create_agency
from shared.db import create_schema, session_scope
from shared.heartbeat import new_beat, send
from shared.migrations import head
from shared.models import Bulletin
from shared.settings import Settings, get_settings

MAX_WRITES = 5000  # the writer's bound, whatever happens to the test


def settings_in(path: Path, **overrides: str) -> Settings:
    return Settings(data_dir=path, redis_url="memory://", **overrides)  # type: ignore[arg-type]


def add_bulletin(settings: Settings, agency_id: int, n: int) -> None:
    now = datetime.now(UTC)
    with session_scope(settings) as session:
        session.add(Bulletin(
            agency_id=agency_id, slug=f"thong-bao-{n}", title=f"Thông báo số {n}",
            body_format="text", body_source="Nội dung", body_html="<p>Nội dung</p>",
            published_at=now,
        ))  # fmt: skip


@pytest.fixture
def live(tmp_path: Path) -> Settings:
    """A data dir with a database (an agency, 20 bulletins) and a rendered site."""
    settings = settings_in(tmp_path / "live")
    create_schema(settings)
    with session_scope(settings) as session:
        agency, _key = create_agency(session, name="Sở Y tế Bắc Kạn", slug="bac-kan")
    for n in range(20):
        add_bulletin(settings, agency.id, n)
    page = settings.resolved_site_dir / "bac-kan" / "thong-bao-1" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text("<h1>Thông báo số 1</h1>")
    (settings.resolved_site_dir / "feed.xml").write_text("<feed/>")
    return settings


def bulletins(settings: Settings) -> list[tuple[int, str]]:
    with session_scope(settings) as session:
        return [tuple(row) for row in session.execute(select(Bulletin.id, Bulletin.title))]  # type: ignore[misc]


def test_a_backup_taken_while_a_writer_writes_restores_a_consistent_database(
    live: Settings, tmp_path: Path
) -> None:
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        for n in range(100, 100 + MAX_WRITES):
            if stop.is_set():
                return
            add_bulletin(live, 1, n)
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 20 and thread.is_alive():  # the writer is writing: back up now
            stop.wait(0.01)
        archive, manifest = make_backup(live, tmp_path / "backups")
        during = written[0]
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert archive.parent == tmp_path / "backups" and archive.name.startswith("bantin-backup-")
    assert (manifest["database"], manifest["revision"], manifest["site_files"]) == (
        "sqlite", head(), 2,
    )  # fmt: skip

    target = settings_in(tmp_path / "restored")
    said = restore_backup(target, archive, yes=False, force=False)
    assert "the database" in said and "the site" in said
    restored = bulletins(target)
    source = bulletins(live)
    # A snapshot: exactly the first rows of the live database, none half-written, and at
    # least every row committed before the backup began.
    assert 20 + 20 <= len(restored) <= 20 + during + 1
    assert restored == source[: len(restored)]
    copy = sqlite3.connect(target.data_dir / "bantin.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    copy.close()
    page = target.resolved_site_dir / "bac-kan" / "thong-bao-1" / "index.html"
    assert page.read_text() == "<h1>Thông báo số 1</h1>"
    assert (target.resolved_site_dir / "feed.xml").read_text() == "<feed/>"


def test_restore_refuses_to_replace_a_database_and_site_without_yes(
    live: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path)
    (live.resolved_site_dir / "feed.xml").write_text("<feed>newer</feed>")
    with pytest.raises(click.ClickException, match="would replace .*bantin.db and .*site"):
        restore_backup(live, archive, yes=False, force=False)
    assert (live.resolved_site_dir / "feed.xml").read_text() == "<feed>newer</feed>"

    restore_backup(live, archive, yes=True, force=False)
    assert (live.resolved_site_dir / "feed.xml").read_text() == "<feed/>"
    assert len(bulletins(live)) == 20
    assert not list(live.data_dir.glob(".restore-*"))  # the staging directory is gone


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something answers on, as a running `bantin up`'s Redis does."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_restore_refuses_while_bantin_up_runs_on_the_data_dir(
    live: Settings, tmp_path: Path, listening: int
) -> None:
    archive, _ = make_backup(live, tmp_path)
    target = settings_in(tmp_path / "target")
    target.embedded_redis_file.parent.mkdir(parents=True)
    target.embedded_redis_file.write_text(f"redis://127.0.0.1:{listening}/0\n")
    with pytest.raises(click.ClickException, match="`bantin up` is running"):
        restore_backup(target, archive, yes=True, force=False)
    assert not (target.data_dir / "bantin.db").exists()
    restore_backup(target, archive, yes=True, force=True)
    assert len(bulletins(target)) == 20


def test_a_stale_url_file_of_a_stopped_system_does_not_block_a_restore(
    live: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]  # closed below: nothing answers there any more
    target = settings_in(tmp_path / "target")
    target.embedded_redis_file.parent.mkdir(parents=True)
    target.embedded_redis_file.write_text(f"redis://127.0.0.1:{port}/0\n")
    restore_backup(target, archive, yes=False, force=False)
    assert len(bulletins(target)) == 20


def test_restore_refuses_what_is_not_a_backup_and_a_sqlite_backup_into_postgresql(
    live: Settings, tmp_path: Path
) -> None:
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as archive:
        archive.add(live.data_dir / "bantin.db", "bantin.db")
    with pytest.raises(click.ClickException, match="not a Bantin backup"):
        restore_backup(settings_in(tmp_path / "t1"), other, yes=True, force=False)

    archive_path, _ = make_backup(live, tmp_path)
    elsewhere = settings_in(tmp_path / "t2", database_url="postgresql+psycopg://x@127.0.0.1:1/x")
    with pytest.raises(click.ClickException, match="settings name another database"):
        restore_backup(elsewhere, archive_path, yes=True, force=False)


def test_on_postgresql_the_backup_holds_the_site_and_says_how_to_dump_the_database(
    postgres_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (data / "site").mkdir(parents=True)
    (data / "site" / "index.html").write_text("<h1>Bản tin</h1>")
    monkeypatch.setenv("BANTIN_DATA_DIR", str(data))
    monkeypatch.setenv("BANTIN_DATABASE_URL", postgres_database)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(bantin, ["backup"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (archive,) = tmp_path.glob("bantin-backup-*.tar.gz")  # the default: here, timestamped
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == ["bantin-backup.json", "site", "site/index.html"]
        manifest = json.loads(opened.extractfile("bantin-backup.json").read())  # type: ignore[union-attr]
    assert manifest["database"] is None
    assert "NOT in the archive" in result.output
    database = postgres_database.replace("postgresql+psycopg://", "postgresql://")
    assert f"pg_dump --format=custom --file={archive.name.removesuffix('.tar.gz')}.pgdump " \
        f"'{database}'" in result.output  # fmt: skip
    assert f"pg_restore --no-owner --dbname='{database}'" in result.output


def test_a_backup_is_readable_by_its_owner_only_and_never_overwrites_an_archive(
    live: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path / "backups")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600  # it holds embargoed text
    held = archive.read_bytes()
    with pytest.raises(click.ClickException, match="already exists: name another file"):
        make_backup(live, archive)
    assert archive.read_bytes() == held
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]  # no .partial

    archive.with_name("other.tar.gz.partial").write_text("an interrupted backup")
    with pytest.raises(click.ClickException, match="other.tar.gz.partial exists"):
        make_backup(live, archive.with_name("other.tar.gz"))
    assert not archive.with_name("other.tar.gz").exists()


def with_manifest(archive: Path, dest: Path, **changes: Any) -> Path:
    """A copy of an archive whose manifest says something else."""
    with tarfile.open(archive) as source, tarfile.open(dest, "w:gz") as copy:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name == "bantin-backup.json" and data is not None:
                raw = json.dumps({**json.loads(data.read()), **changes}).encode()
                member.size = len(raw)
                data = io.BytesIO(raw)
            copy.addfile(member, data)
    return dest


def test_a_backup_of_a_newer_schema_is_refused_before_anything_is_replaced(
    live: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path)
    newer = with_manifest(archive, tmp_path / "newer.tar.gz", revision="0099_from_the_future")
    (live.resolved_site_dir / "feed.xml").write_text("<feed>newer</feed>")
    add_bulletin(live, 1, 99)
    with pytest.raises(click.ClickException, match="revision 0099_from_the_future.*Upgrade Bantin"):
        restore_backup(live, newer, yes=True, force=False)
    assert len(bulletins(live)) == 21 and not list(live.data_dir.glob("*.replaced-*"))
    assert (live.resolved_site_dir / "feed.xml").read_text() == "<feed>newer</feed>"
    # Not a prefix match: "0003" is no revision of this release either.
    prefix = with_manifest(archive, tmp_path / "prefix.tar.gz", revision=head()[:4])
    with pytest.raises(click.ClickException, match=f"revision {head()[:4]},"):
        restore_backup(live, prefix, yes=True, force=False)


def with_member(archive: Path, dest: Path, member: tarfile.TarInfo) -> Path:
    """A copy of an archive with one more member (the manifest still says it is a backup)."""
    with tarfile.open(archive) as source, tarfile.open(dest, "w:gz") as copy:
        for each in source.getmembers():
            copy.addfile(each, source.extractfile(each) if each.isfile() else None)
        copy.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return dest


@pytest.mark.parametrize("checked_by", ["data_filter", "own_checks"])
def test_restore_refuses_members_that_escape_or_are_not_plain_files(
    live: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked_by: str
) -> None:
    if checked_by == "own_checks":  # as on Python before 3.11.4, which lacks the filter
        monkeypatch.delattr(tarfile, "data_filter")
    archive, _ = make_backup(live, tmp_path)
    escape = tarfile.TarInfo("site/../../escaped.txt")
    escape.size = 1
    link = tarfile.TarInfo("site/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    absolute = tarfile.TarInfo(str(tmp_path / "absolute.txt"))
    absolute.size = 1
    for n, member in enumerate([escape, link, absolute]):
        bad = with_member(archive, tmp_path / f"bad{n}.tar.gz", member)
        target = settings_in(tmp_path / f"target{n}")
        if member is absolute and checked_by == "data_filter":
            # The filter strips the leading "/": the file lands inside the staging directory.
            restore_backup(target, bad, yes=True, force=False)
            continue
        with pytest.raises(click.ClickException, match="refusing the backup"):
            restore_backup(target, bad, yes=True, force=False)
        assert not (target.data_dir / "bantin.db").exists()
        assert not (target.resolved_site_dir / "passwd").exists()
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "absolute.txt").exists()
    restore_backup(settings_in(tmp_path / "good"), archive, yes=True, force=False)
    assert len(bulletins(settings_in(tmp_path / "good"))) == 20  # a sound archive still restores


def test_restoring_a_site_only_archive_says_only_the_site_was_restored(
    live: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path)
    # What a backup on PostgreSQL holds: the site, no database.
    site_only = with_manifest(archive, tmp_path / "site-only.tar.gz", database=None)
    target = settings_in(tmp_path / "target")
    said = restore_backup(target, site_only, yes=False, force=False)
    assert said == f"the site ({target.resolved_site_dir})"
    assert not (target.data_dir / "bantin.db").exists()
    assert (target.resolved_site_dir / "feed.xml").read_text() == "<feed/>"


@pytest.fixture
def crashed(live: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A data dir whose database has committed rows only in its -wal (a system that
    stopped before a checkpoint): 20 bulletins in the file, 25 with the WAL."""
    writer = sqlite3.connect(live.data_dir / "bantin.db")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for n in range(5):
        writer.execute(
            "INSERT INTO bulletins (guid, agency_id, slug, title, body_format, body_source, "
            "body_html, language, published_at, status, revision, rendered_revision, attempts, "
            "created_at, updated_at) VALUES (?, 1, ?, 'Chỉ trong WAL', 'text', '', '', 'vi', "
            "'2026-01-01', 'published', 1, 0, 0, '2026-01-01', '2026-01-01')",
            (f"wal-{n}", f"wal-{n}"),
        )
    writer.commit()
    target = settings_in(tmp_path / "crashed")
    target.data_dir.mkdir()
    for suffix in ("", "-wal", "-shm"):  # copied while the writer holds them: as a crash leaves
        shutil.copy(live.data_dir / f"bantin.db{suffix}", target.data_dir / f"bantin.db{suffix}")
    writer.close()
    yield target


def test_restore_keeps_the_replaced_database_with_its_wal_beside_the_new_one(
    live: Settings, crashed: Settings, tmp_path: Path
) -> None:
    archive, _ = make_backup(live, tmp_path)  # the same 25 bulletins
    assert (crashed.data_dir / "bantin.db-wal").stat().st_size  # 5 of them only in the WAL
    said = restore_backup(crashed, archive, yes=True, force=False)
    (aside,) = crashed.data_dir.glob("bantin.db.replaced-*[0-9]Z")
    assert f"kept as {aside}" in said
    assert (crashed.data_dir / f"{aside.name}-wal").exists()
    old = sqlite3.connect(aside)  # opened with its own -wal: every committed row is there
    assert old.execute("SELECT count(*) FROM bulletins").fetchone() == (25,)
    old.close()
    assert len(bulletins(crashed)) == 25
    assert not list(crashed.data_dir.glob(".bantin.db.restore-*"))


def test_a_restore_whose_last_step_fails_leaves_the_database_and_its_wal_as_they_were(
    live: Settings, crashed: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, _ = make_backup(live, tmp_path)
    wal = (crashed.data_dir / "bantin.db-wal").read_bytes()
    assert wal  # the 5 rows only the WAL holds

    def fail(staged: Path, database: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(db_module, "_put_in_place", fail)
    with pytest.raises(click.ClickException, match="No space left on device.*as it was"):
        restore_backup(crashed, archive, yes=True, force=False)
    assert (crashed.data_dir / "bantin.db-wal").read_bytes() == wal
    assert sorted(p.name for p in crashed.data_dir.iterdir() if p.name.startswith(".bantin")) == []
    assert not list(crashed.data_dir.glob("bantin.db.replaced-*"))
    titles = [title for _id, title in bulletins(crashed)]
    assert len(titles) == 25 and titles.count("Chỉ trong WAL") == 5


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return int(done.stdout)


def test_restore_refuses_while_the_run_state_of_bantin_up_names_a_live_pid(
    live: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive, _ = make_backup(live, tmp_path)
    target = settings_in(tmp_path / "target")  # its Redis is not the embedded one
    target.data_dir.mkdir()
    run_state = target.data_dir / "run.json"
    run_state.write_text(json.dumps({"pid": dead_pid()}))  # left by a killed supervisor
    restore_backup(target, archive, yes=True, force=False)

    run_state.write_text(json.dumps({"pid": os.getpid()}))  # alive: this very process
    with pytest.raises(click.ClickException, match=rf"`bantin up` \(pid {os.getpid()}\)"):
        restore_backup(target, archive, yes=True, force=False)
    assert not list(target.data_dir.glob("bantin.db.replaced-*"))
    restore_backup(target, archive, yes=True, force=True)
    assert f"(pid {os.getpid()}) is running" in capsys.readouterr().err  # says what it found
    assert len(list(target.data_dir.glob("bantin.db.replaced-*[0-9]Z"))) == 1


def test_restore_refuses_while_processes_beat_in_the_configured_redis(
    live: Settings, tmp_path: Path, private_redis: str
) -> None:
    archive, _ = make_backup(live, tmp_path)
    target = Settings(data_dir=tmp_path / "target", redis_url=private_redis)  # type: ignore[arg-type]
    redis = Redis.from_url(private_redis)
    beat = new_beat("render")  # a worker started on its own, not by `bantin up`
    send(redis, beat)
    try:
        with pytest.raises(click.ClickException, match=f"1 Bantin processes beat.*{beat.name}"):
            restore_backup(target, archive, yes=True, force=False)
        assert not (target.data_dir / "bantin.db").exists()
    finally:
        redis.delete(beat.key)
        redis.close()
    restore_backup(target, archive, yes=True, force=False)  # nobody beats: it goes ahead
    assert len(bulletins(target)) == 20

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]  # closed below: a Redis that does not answer
    gone = Settings(data_dir=tmp_path / "gone", redis_url=f"redis://127.0.0.1:{port}/0")  # type: ignore[arg-type]
    restore_backup(gone, archive, yes=True, force=False)
    assert len(bulletins(gone)) == 20
