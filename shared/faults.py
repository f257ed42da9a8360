"""Named kill points for fault-injection tests, off unless BANTIN_FAULT_INJECTION=1.

A test arms a point by writing a file `<data dir>/faults/<point>` holding `crash` (the process
dies at once, as with SIGKILL, and the file is removed so the restarted process carries on) or
`sleep:<seconds>` (the process pauses there, to widen a race window).
"""

from __future__ import annotations

import os
import time

from shared.settings import Settings

INGEST_AFTER_COMMIT = "ingest-after-commit"
RENDER_BEFORE_WRITE = "render-before-write"


def checkpoint(settings: Settings, point: str) -> None:
    if not settings.fault_injection:
        return
    armed = settings.data_dir / "faults" / point
    try:
        action = armed.read_text().strip()
    except FileNotFoundError:
        return
    if action == "crash":
        armed.unlink(missing_ok=True)
        os._exit(137)
    if action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
