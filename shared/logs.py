"""Logging for every Bantin process: human-readable lines by default, one JSON object per line
with BANTIN_LOG_FORMAT=json. Events about a bulletin carry its id, agency and revision (pass
`extra=bulletin_fields(...)`), so `grep bulletin_id=42` (text) or
`jq 'select(.bulletin_id == 42)'` (JSON) tells its whole story across processes."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from shared.settings import Settings

# Context a record may carry (via `extra=`); text lines end with them as key=value.
CONTEXT_FIELDS = ("bulletin_id", "agency", "revision", "queue", "task", "listing")


def bulletin_fields(bulletin_id: int, agency: str | None, revision: int | None) -> dict[str, Any]:
    """The `extra=` of a log call about one bulletin."""
    return {"bulletin_id": bulletin_id, "agency": agency, "revision": revision}


class TextFormatter(logging.Formatter):
    """`time level process logger: message key=value…`: readable, and grep-able by field."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        )
        if not context:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {context}{newline}{rest}"


class _ProcessRole(logging.Filter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_role = self.role
        return True


def make_handler(settings: Settings, role: str) -> logging.Handler:
    """A stderr handler in the configured format, naming the process `role` on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ProcessRole(role))
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(process_role)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                               "process_role": "process"},
                json_ensure_ascii=False,
                # uvicorn's records carry a copy of the message with terminal colours.
                reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            )
        )  # fmt: skip
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s %(process_role)s %(name)s: %(message)s")
        )
    return handler


def configure_logging(settings: Settings, role: str) -> None:
    """Route every logger of this process through one handler in the configured format."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(settings, role))
    root.setLevel(settings.log_level.upper())
    # uvicorn configures its loggers before it imports the app: send their records (start-up,
    # errors, access lines) through the same handler, in the same format. An access log that
    # `--no-access-log` switched off (no handler, no propagation) stays off: request lines
    # would carry secrets in URLs (the console's one-time sign-in links).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.handlers and not logger.propagate:
            continue
        logger.handlers.clear()
        logger.propagate = True
