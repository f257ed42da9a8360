"""`bantin status`: what is running and how far behind it is, for a person or a script.

It reads only what every deployment has: the heartbeats and queues in Redis (the
BANTIN_REDIS_URL, or the embedded Redis of the `bantin up` on the data dir) and the bulletins
in the database. So it works beside `bantin up` and inside a compose container alike.

`--json` prints one object with these keys (stable; times are Unix seconds, durations seconds):

- `ok` (bool), `problems` (list of sentences), `checked_at`
- `redis` / `database`: `{"url": ... (no password), "error": null or why unreachable}`
- `processes`: `[{"role", "name", "pid", "host", "age_seconds" (since its last beat),
  "silent" (true: no beat for over SILENT_AFTER seconds, not counted alive),
  "uptime_seconds", "metrics_url", "info"}]`, or null when Redis is unreachable
- `queues`: `[{"queue", "depth", "oldest_age_seconds"}]`, or null when unknown
- `queues_error`: why the queue stats are unknown although Redis answered (the database
  behind the render queue's age, say), else null
- `bulletins`: `{"queued", "scheduled", "failed"}`, or null when the database is unreachable
- `errors`: the latest bulletins with an error: `[{"bulletin_id", "agency", "revision",
  "status", "last_error", "updated_at"}]`
- `reconciler`: `{"name", "age_seconds", "info"}` of the newest reconciler beat, or null
- `latency`: bulletins rendered in the last `window_seconds`: `{"window_seconds", "count",
  "p50_seconds", "p95_seconds", "max_seconds"}` (accepted or changed, or its embargo ended →
  page written), or null

Exit codes: 0 all well; 1 something is wrong (a backend unreachable, a role with no live
process, a reconciler alive but not finishing passes, failed bulletins, work waiting too long);
2 a usage error.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from shared.heartbeat import HEARTBEAT_INTERVAL, HEARTBEAT_TTL
from shared.settings import Settings, get_settings

EXPECTED_ROLES = ("ingest", "gateway", "render", "feed", "deliver", "reconciler")
LATENCY_WINDOW = 60.0
LATENCY_ROWS = 50_000  # bound on the rows one status reads for the latency
LAST_ERRORS = 5
ERROR_WIDTH = 100  # characters of a last_error shown in the table
CONNECT_TIMEOUT = 3.0
# A beat this late means the process missed two in a row: killed (its key lives on until it
# expires), stopped, or stuck. Listed, marked, and not counted as alive.
SILENT_AFTER = 2.5 * HEARTBEAT_INTERVAL


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses (a redis:// one may not be)
        return url


def _redis_shown(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted `values` (not empty)."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def gather_redis(settings: Settings, report: dict[str, Any]) -> None:
    from redis import Redis

    from shared.heartbeat import read_all
    from shared.queues import queue_stats

    try:
        url = settings.broker_url
    except RuntimeError as exc:  # no BANTIN_REDIS_URL and no embedded Redis running
        report["redis"] = {"url": None, "error": str(exc)}
        return
    report["redis"] = {"url": _redis_shown(url), "error": None}
    redis = Redis.from_url(
        url, socket_timeout=CONNECT_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    try:
        now = time.time()
        report["processes"] = [
            {
                "role": beat.role,
                "name": beat.name,
                "pid": beat.pid,
                "host": beat.host,
                "age_seconds": round(max(0.0, now - beat.seen_at), 1),
                "silent": now - beat.seen_at > SILENT_AFTER,
                "uptime_seconds": round(max(0.0, now - beat.started_at), 1),
                "metrics_url": beat.metrics_url,
                "info": beat.info,
            }
            for beat in read_all(redis)
        ]
        reconcilers = [p for p in report["processes"] if p["role"] == "reconciler"]
        if reconcilers:
            newest = min(reconcilers, key=lambda p: p["age_seconds"])
            report["reconciler"] = {k: newest[k] for k in ("name", "age_seconds", "info")}
    except Exception as exc:  # RedisError, or a garbled beat: say it, show the rest
        report["redis"]["error"] = _error(exc)
        return
    finally:
        redis.close()
    redis = Redis.from_url(
        url, socket_timeout=CONNECT_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    try:
        report["queues"] = [
            {
                "queue": stats.queue,
                "depth": stats.depth,
                "oldest_age_seconds": None
                if stats.oldest_age_seconds is None
                else round(stats.oldest_age_seconds, 1),
            }
            for stats in queue_stats(settings, redis)
        ]
    except Exception as exc:  # Redis or the database behind the queue ages
        report["queues_error"] = _error(exc)
    finally:
        redis.close()


def _sqlite_missing(settings: Settings) -> str | None:
    """Reading a SQLite file that is not there would create an empty one: say so instead."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    from pathlib import Path

    if Path(url.database).exists():
        return None
    return f"no database file at {url.database} (has `bantin up` run on this data dir?)"


def gather_database(settings: Settings, report: dict[str, Any]) -> None:
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Agency, Bulletin, BulletinStatus

    report["database"] = {"url": _hide_password(settings.resolved_database_url), "error": None}
    if missing := _sqlite_missing(settings):
        report["database"]["error"] = missing
        return
    try:
        with session_scope(settings) as session:
            counted = (BulletinStatus.QUEUED, BulletinStatus.SCHEDULED, BulletinStatus.FAILED)
            counts = dict(
                session.execute(
                    select(Bulletin.status, func.count())
                    .where(Bulletin.status.in_(counted))
                    .group_by(Bulletin.status)
                ).all()
            )
            report["bulletins"] = {str(status): int(counts.get(status, 0)) for status in counted}
            # Failed ones, and queued ones retrying after an error (the status index finds them).
            rows = session.execute(
                select(Bulletin.id, Agency.slug, Bulletin.revision, Bulletin.status,
                       Bulletin.last_error, Bulletin.updated_at)
                .join(Agency, Agency.id == Bulletin.agency_id)
                .where(Bulletin.status.in_((BulletinStatus.FAILED, BulletinStatus.QUEUED)),
                       Bulletin.last_error.is_not(None))
                .order_by(Bulletin.updated_at.desc())
                .limit(LAST_ERRORS)
            ).all()  # fmt: skip
            report["errors"] = [
                {
                    "bulletin_id": bulletin_id,
                    "agency": agency,
                    "revision": revision,
                    "status": status,
                    "last_error": last_error,
                    "updated_at": updated_at.timestamp(),
                }
                for bulletin_id, agency, revision, status, last_error, updated_at in rows
            ]
            since = datetime.fromtimestamp(time.time() - LATENCY_WINDOW, UTC)
            rendered = session.execute(
                select(Bulletin.rendered_at, Bulletin.updated_at, Bulletin.published_at)
                .where(Bulletin.rendered_at >= since)
                .limit(LATENCY_ROWS)
            ).all()
    except Exception as exc:  # unreachable, or a schema this version does not know
        report["database"]["error"] = _error(exc)
        return
    # From when the page was owed: the revision's acceptance or its embargo's end, whichever
    # is later (as the bantin_publish_latency_seconds metric counts it).
    report["latency"] = latency(
        [(done - max(updated, published)).total_seconds()
         for done, updated, published in rendered if done]
    )  # fmt: skip


def latency(seconds: list[float]) -> dict[str, Any]:
    values = sorted(max(0.0, value) for value in seconds)
    found: dict[str, Any] = {"window_seconds": LATENCY_WINDOW, "count": len(values)}
    for key, fraction in (("p50_seconds", 0.5), ("p95_seconds", 0.95), ("max_seconds", 1.0)):
        found[key] = round(percentile(values, fraction), 3) if values else None
    return found


def problems(report: dict[str, Any], settings: Settings | None = None) -> list[str]:
    found = []
    redis, database = report.get("redis") or {}, report.get("database") or {}
    if redis.get("error"):
        found.append(f"Redis unreachable: {redis['error']}")
    if database.get("error"):
        found.append(f"database unreachable: {database['error']}")
    if report.get("processes") is not None:
        alive = {p["role"] for p in report["processes"] if not p.get("silent")}
        for role in EXPECTED_ROLES:
            if role not in alive:
                found.append(f"no {role} process alive (no heartbeat in the last seconds)")
    if stuck := _reconciler_stuck(report, settings):
        found.append(stuck)
    if report.get("queues_error"):
        found.append(f"queue stats unavailable: {report['queues_error']}")
    too_old = max(60.0, 2 * settings.requeue_after_seconds) if settings else 60.0
    for queue in report.get("queues") or []:
        if (queue["oldest_age_seconds"] or 0) > too_old:
            found.append(
                f"{queue['queue']} queue: work waiting for {_duration(queue['oldest_age_seconds'])}"
            )
    failed = (report.get("bulletins") or {}).get("failed", 0)
    if failed:
        found.append(
            f"{failed} failed bulletin(s) (errors below); `bantin retry-failed` re-queues them"
        )
    return found


def _reconciler_stuck(report: dict[str, Any], settings: Settings | None) -> str | None:
    """A reconciler that beats but has not finished a pass for a while: its heartbeat comes
    from a side thread, so only the pass time says whether its loop still runs."""
    reconciler = report.get("reconciler")
    if not reconciler:
        return None
    processes = report.get("processes") or []
    process: dict[str, Any] = next((p for p in processes if p["name"] == reconciler["name"]), {})
    if process.get("silent"):  # not alive at all: "no reconciler process alive" says so
        return None
    stuck_after = max(30.0, 5 * settings.reconcile_interval_seconds) if settings else 30.0
    now = report["checked_at"]
    last_pass_at = (reconciler.get("info") or {}).get("last_pass_at")
    if isinstance(last_pass_at, int | float) and not isinstance(last_pass_at, bool):
        since = now - last_pass_at
        if since > stuck_after:
            return f"reconciler alive but its last pass was {_duration(since)} ago: stuck?"
    elif (process.get("uptime_seconds") or 0) > stuck_after:
        return (
            f"reconciler alive but no pass finished in its {_duration(process['uptime_seconds'])}"
            " up: stuck?"
        )
    return None


def collect(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ok": False,
        "checked_at": round(time.time(), 3),
        "problems": [],
        "redis": None,
        "database": None,
        "processes": None,
        "queues": None,
        "queues_error": None,
        "bulletins": None,
        "errors": [],
        "reconciler": None,
        "latency": None,
    }
    gather_redis(settings, report)
    gather_database(settings, report)
    report["problems"] = problems(report, settings)
    report["ok"] = not report["problems"]
    return report


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _info_text(info: dict[str, Any], now: float) -> str:
    """A heartbeat's info as `key=value`s: `*_at` Unix times as ages, nested counts inline,
    empty values left out."""
    parts = []
    for key, value in info.items():
        if value is None or value == {} or value == []:
            continue
        if key.endswith("_at") and isinstance(value, int | float):
            parts.append(f"{key.removesuffix('_at')} {_duration(max(0.0, now - value))} ago")
        elif isinstance(value, dict):
            inner = " ".join(f"{k}={v}" for k, v in value.items())
            parts.append(f"{key} ({inner})")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.3g}")
        elif isinstance(value, list):
            parts.append(f"{key}={json.dumps(value, ensure_ascii=False)}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def render(report: dict[str, Any]) -> str:
    """The report as the table a person reads."""
    now = report["checked_at"]
    when = datetime.fromtimestamp(now).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    out = [f"Bantin status at {when}"]
    rows: list[tuple[str, ...]]
    redis, database = report.get("redis") or {}, report.get("database") or {}
    out.append(
        f"  Redis     {redis.get('url') or '?'}" + (" (unreachable)" if redis.get("error") else "")
    )
    out.append(
        f"  database  {database.get('url') or '?'}"
        + (" (unreachable)" if database.get("error") else "")
    )

    out += ["", "PROCESSES (alive: a heartbeat in the last few seconds)"]
    processes = report.get("processes")
    if processes is None:
        out.append("  unknown: Redis is unreachable")
    elif not processes:
        out.append("  none alive")
    else:
        rows = [
            (p["role"], p["name"], str(p["pid"]), p["host"],
             f"{_duration(p['age_seconds'])} ago" + (", SILENT" if p.get("silent") else ""),
             _duration(p["uptime_seconds"]), p["metrics_url"] or "-")
            for p in processes
        ]  # fmt: skip
        out += _table(("ROLE", "NAME", "PID", "HOST", "LAST BEAT", "UP", "METRICS"), rows)
    if processes is not None:
        missing = [r for r in EXPECTED_ROLES if r not in {p["role"] for p in processes}]
        if missing:
            out.append(f"  NOT RUNNING: {', '.join(missing)}")
        if any(p.get("silent") for p in processes):
            out.append(
                f"  SILENT: no heartbeat for over {SILENT_AFTER:.0f} s: stopped, killed or stuck "
                f"(listed until {HEARTBEAT_TTL} s)"
            )

    out += ["", "QUEUES"]
    if report.get("queues") is None:
        out.append(f"  unknown: {report.get('queues_error') or 'Redis is unreachable'}")
    else:
        rows = [
            (q["queue"], str(q["depth"]), _duration(q["oldest_age_seconds"]))
            for q in report["queues"]
        ]
        out += _table(("QUEUE", "WAITING", "OLDEST"), rows)

    out += ["", "BULLETINS"]
    bulletins = report.get("bulletins")
    if bulletins is None:
        out.append("  unknown: the database is unreachable")
    else:
        out.append(
            f"  queued {bulletins['queued']}   scheduled {bulletins['scheduled']}   "
            f"failed {bulletins['failed']}"
        )
        if report.get("errors"):
            out.append("  latest errors:")
            rows = [
                (str(e["bulletin_id"]), e["agency"], str(e["revision"]), e["status"],
                 f"{_duration(max(0.0, now - e['updated_at']))} ago",
                 " ".join(str(e["last_error"]).split())[:ERROR_WIDTH])
                for e in report["errors"]
            ]  # fmt: skip
            out += _table(("ID", "AGENCY", "REV", "STATUS", "WHEN", "ERROR"), rows, "    ")

    out += ["", "RECONCILER"]
    reconciler = report.get("reconciler")
    if reconciler is None:
        out.append("  unknown: no reconciler heartbeat" if processes is not None else "  unknown")
    else:
        info = _info_text(reconciler.get("info") or {}, now)
        out.append(
            f"  {reconciler['name']}, last beat {_duration(reconciler['age_seconds'])} ago"
            + (f"; {info}" if info else "; no pass reported yet")
        )

    window = report.get("latency") or {}
    seconds = window.get("window_seconds", LATENCY_WINDOW)
    out += ["", f"PUBLISH LATENCY (accepted or embargo ended → page written, last {seconds:.0f} s)"]
    if not window:
        out.append("  unknown: the database is unreachable")
    elif not window["count"]:
        out.append("  nothing rendered")
    else:
        out.append(
            f"  {window['count']} rendered   p50 {window['p50_seconds']:.3f} s   "
            f"p95 {window['p95_seconds']:.3f} s   max {window['max_seconds']:.3f} s"
        )

    out.append("")
    if report["problems"]:
        out.append(f"PROBLEMS ({len(report['problems'])})")
        out += [f"  ! {problem}" for problem in report["problems"]]
    else:
        out.append("All well.")
    return "\n".join(out)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object (keys: see the docs).")
def status(as_json: bool) -> None:
    """Processes alive, queues, bulletins waiting or failed, the reconciler's last pass and
    the last minute's publish latency. Exits 0 when all is well, 1 when something is wrong."""
    try:
        settings = get_settings()
    except Exception as exc:  # a bad BANTIN_* value: pydantic says which
        raise click.ClickException(f"invalid settings: {exc}") from None
    report = collect(settings)
    click.echo(json.dumps(report, ensure_ascii=False, indent=2) if as_json else render(report))
    raise SystemExit(0 if report["ok"] else 1)


COMMANDS = [status]
