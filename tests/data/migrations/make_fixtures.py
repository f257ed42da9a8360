"""Make the previous release's databases these tests upgrade (run by hand, never by tests).

Runs the PREVIOUS release's own code: its `init-db`, `agency create`, `key create`/`revoke`
commands and its ingest service functions, against a SQLite file and a PostgreSQL database,
then dumps both as SQL text next to this file. See README.md here for the exact command.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def cli(release: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=release, env={**os.environ, **env, "PYTHONPATH": str(release)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{args} failed:\n{done.stderr}")
    return done.stdout


def populate(release: Path, env: dict[str, str]) -> dict[str, Any]:
    """Agencies, keys (one revoked) and bulletins, written by the release's own code."""
    cli(release, env, "init-db")
    keys = {
        "bac-kan": cli(release, env, "agency", "create", "Sở Y tế Bắc Kạn", "--slug", "bac-kan"),
        "ha-noi": cli(release, env, "agency", "create", "UBND TP Hà Nội", "--slug", "ha-noi"),
    }  # fmt: skip
    revoked = cli(release, env, "key", "create", "--agency", "bac-kan").strip().splitlines()[-1]
    cli(release, env, "key", "revoke", revoked[:16])
    # The rest in a child process importing the release's modules (never this checkout's).
    script = f"""
import json, os
from datetime import UTC, datetime, timedelta
import shared
assert shared.__file__.startswith({str(release)!r}), shared.__file__
from sqlalchemy import select
from services.ingest import service
from services.ingest.schemas import BulletinCreate
from shared.db import session_scope
from shared.models import Agency, Bulletin, BulletinStatus
from shared.settings import get_settings

settings = get_settings()
now = datetime.now(UTC)
items = [
    dict(title="Thông báo tạm dừng cấp nước sinh hoạt tại phường Đức Xuân", category="Hạ tầng",
         body="Công ty Cổ phần Cấp thoát nước Bắc Kạn thông báo tạm dừng cấp nước.\\n\\n"
              "Thời gian: từ 8 giờ đến 17 giờ ngày 02/8/2020.",
         summary="Tạm dừng cấp nước để sửa chữa đường ống.", author="Phòng Hành chính",
         published_at="2020-07-31T08:00:00+07:00"),
    dict(title="Quyết định về việc phòng, chống dịch bệnh", body_format="markdown",
         body="# Quyết định\\n\\n**Điều 1.** Áp dụng các biện pháp *cấp bách* phòng dịch.",
         category="Y tế", published_at="2020-08-01T10:30:00+07:00"),
    dict(title="Cảnh báo khẩn cấp: mưa lũ trên sông Cầu", body_format="html",
         body="<p>Người dân <strong>không</strong> đi qua ngầm tràn.</p><script>x()</script>",
         category="Khẩn cấp", language="vi"),
    dict(title="Lịch tiếp công dân tháng 9", body="Lãnh đạo tiếp công dân vào thứ Năm.",
         category="Y tế", published_at=(now + timedelta(days=30)).isoformat()),
    dict(title="Thông báo tuyển dụng viên chức năm 2020", body="Chi tiết tại trụ sở."),
]
slugs = ["bac-kan", "bac-kan", "ha-noi", "ha-noi", "bac-kan"]
ids = []
with session_scope(settings) as session:
    agencies = dict((r[0], r[1]) for r in session.execute(select(Agency.slug, Agency.id)).all())
    for n, (item, slug) in enumerate(zip(items, slugs)):
        bulletin_in = BulletinCreate.model_validate(item)
        row = service.new_bulletin(
            session, agency_id=agencies[slug], bulletin_in=bulletin_in,
            body_html=service.render_body(settings, bulletin_in),
            idempotency_key=f"phat-hanh-{{n}}" if n % 2 == 0 else None, now=now,
        )
        session.add(row)
        session.flush()
        ids.append(row.id)
# What the render worker records when a page is live, and when it gives up.
with session_scope(settings) as session:
    for bulletin in session.scalars(select(Bulletin).where(Bulletin.id.in_(ids[:3]))):
        bulletin.status, bulletin.rendered_revision = BulletinStatus.PUBLISHED, bulletin.revision
        bulletin.rendered_at, bulletin.pending_since = now, None
    failed = session.get(Bulletin, ids[4])
    failed.status, failed.attempts = BulletinStatus.FAILED, 5
    failed.last_error, failed.pending_since = "OSError: [Errno 28] Hết dung lượng đĩa", None
# A correction (revision 2) and a withdrawal (revision 2), through the release's service.
with session_scope(settings) as session:
    service.update_bulletin(
        session=session, settings=settings, agency_id=agencies["bac-kan"], bulletin_id=ids[0],
        bulletin_in=BulletinCreate.model_validate(
            {{**items[0], "title": items[0]["title"] + " (đính chính)"}}
        ),
    )
with session_scope(settings) as session:
    service.withdraw_bulletin(session=session, agency_id=agencies["ha-noi"], bulletin_id=ids[2])
print(json.dumps(ids))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=release,
        env={**os.environ, **env, "PYTHONPATH": str(release)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"populating failed:\n{done.stderr}")
    return {
        "keys": {slug: out.strip().splitlines()[-1] for slug, out in keys.items()},
        "revoked_key": revoked,
        "bulletin_ids": json.loads(done.stdout),
    }


def main() -> None:
    release, pg_admin = Path(sys.argv[1]).resolve(), sys.argv[2]
    made = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_info = populate(release, {"BANTIN_DATA_DIR": tmp})
        with sqlite3.connect(Path(tmp) / "bantin.db") as db:
            (HERE / "previous-release.sqlite.sql").write_text("\n".join(db.iterdump()) + "\n")
    name = "bantin_fixture_" + os.urandom(4).hex()
    base = pg_admin.rsplit("/", 1)[0]
    subprocess.run(["psql", pg_admin, "-c", f'CREATE DATABASE "{name}"'], check=True)
    try:
        url = base.replace("postgresql://", "postgresql+psycopg://") + "/" + name
        pg_info = populate(release, {"BANTIN_DATA_DIR": "/nonexistent", "BANTIN_DATABASE_URL": url})
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "--inserts", f"{base}/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # pg_dump >= 15.14 brackets its output in psql-only \restrict lines: drop them, so
        # the dump is plain SQL any driver runs.
        lines = [
            line
            for line in dump.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))
        ]
        (HERE / "previous-release.postgresql.sql").write_text("\n".join(lines) + "\n")
    finally:
        subprocess.run(["psql", pg_admin, "-c", f'DROP DATABASE "{name}" WITH (FORCE)'], check=True)
    made_of = {"made_at": made, "sqlite": sqlite_info, "postgresql": pg_info}
    (HERE / "previous-release.json").write_text(json.dumps(made_of, indent=2) + "\n")


if __name__ == "__main__":
    main()
