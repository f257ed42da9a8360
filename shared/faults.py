"""Named kill points for fault-injection tests, off unless BANTIN_FAULT_INJECTION=1.

A test arms a point by writing a file `<data dir>/faults/<point>` holding one action:
- `crash`: the process dies at once, as with SIGKILL; the file is removed, so the restarted
  process carries on (a one-off crash);
- `poison`: the process dies at once, every time (a bulletin that kills its worker);
- `error`: an exception is raised, every time (a bug, a broken dependency);
- `sleep:<seconds>`: the process pauses there, to widen a race window.
"""

from __future__ import annotations

import os
import time

from shared.settings import Settings

INGEST_AFTER_COMMIT = "ingest-after-commit"
RENDER_BEFORE_WRITE = "render-before-write"


class InjectedFault(RuntimeError):
    pass


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
    if action == "poison":
        os._exit(137)
    if action == "error":
        raise InjectedFault(f"injected fault at {point}")
    if action.startswith("sleep:"):
        time.sleep(float(action.removeprefix("sleep:")))
