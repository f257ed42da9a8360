"""The benchmark harness's small core: results, the table, BENCHMARKS.md.

A benchmark measures and reports; it never fails because a number is poor. Targets are
printed beside the figures with "met" / "missed" so the table reads on its own.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Options:
    """What every scenario may look at."""

    quick: bool = False  # small sizes: the whole run in about a minute
    postgres: bool = False  # PostgreSQL instead of the embedded SQLite
    size: int | None = None  # a scenario's own size parameter, when run alone
    workdir: Path = field(default_factory=lambda: Path("var") / "bench")


@dataclass
class Result:
    scenario: str
    metric: str
    value: float | str
    unit: str = ""
    target: str = ""  # e.g. ">= 1000/s"; empty when there is none
    met: bool | None = None  # None: no target, or not comparable
    note: str = ""

    def cells(self) -> list[str]:
        value = f"{self.value:,.1f}" if isinstance(self.value, float) else str(self.value)
        verdict = {True: "met", False: "**missed**", None: ""}[self.met]
        return [self.scenario, self.metric, f"{value} {self.unit}".strip(), self.target,
                verdict, self.note]  # fmt: skip


HEADER = ["scenario", "metric", "value", "target", "", "note"]


def table(results: list[Result]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(r.cells() for r in results)]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                     for row in rows)  # fmt: skip


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())  # fmt: skip
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                     .splitlines() if line.startswith("MemTotal"))  # fmt: skip
    return (f"{len(__import__('os').sched_getaffinity(0))} cores ({cpu}), "
            f"{memory_kb / 1024 / 1024:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def write_markdown(path: Path, results: list[Result], command: str, options: Options) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"  # fmt: skip
    database = "PostgreSQL" if options.postgres else "SQLite (embedded default)"
    mode = "quick" if options.quick else "full"
    path.write_text(
        "# Benchmarks\n\n"
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n"
        f"- command: `{command}`\n"
        f"- commit: {commit}; database: {database}; mode: {mode}\n\n"
        "Every figure comes from a real system the harness started (real Redis, real worker "
        "processes). A benchmark reports; nothing here is asserted by the test suite.\n\n"
        + table(results)
        + "\n"
    )
