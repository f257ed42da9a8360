"""Scenario 3: `bantin rebuild` re-renders every page and feed of a large archive.

    python -m bench.rebuild [--size N] [--quick] [--postgres]

Starts a real system (`bantin up`: embedded Redis, the render worker with its default
concurrency, one process per core), writes N published bulletins straight into its database
(bench/archive.py), then runs the rebuild as the operator's command does (`run_rebuild`,
in-process, against the system's Redis and database) and reports the rate at which pages
were rewritten: from the first batch sent to the last batch counted done.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench.archive import populate
from bench.core import Options, Result, table
from bench.system import running_system
from services.rebuild import DEFAULT_BATCH_SIZE, run_rebuild

NAME = "3 rebuild"
TARGET = 2_000  # pages/s
FULL, QUICK = 100_000, 5_000


def run(options: Options) -> list[Result]:
    n = options.size or (QUICK if options.quick else FULL)
    with running_system(options, "rebuild") as system:
        settings = system.settings()
        started = time.perf_counter()
        populate(settings, n)
        populated = time.perf_counter() - started
        workers = [pid for pid, _ in system.processes("worker render")]
        cpu_before, load_before = cpu_seconds(workers), os.getloadavg()[0]
        report = run_rebuild(settings, batch_size=DEFAULT_BATCH_SIZE, progress=False)
        worker_cpu, load_after = cpu_seconds(workers) - cpu_before, os.getloadavg()[0]
        processes = len(workers) - 1  # the main process and its pool
    counts = report.counts
    written = counts.pages + counts.tombstones
    note = (f"{written:,} of {n:,} pages in {report.pages_seconds:.1f} s, {report.batches} "
            f"batches of {DEFAULT_BATCH_SIZE}, {processes} render processes; archive written "
            f"in {populated:.1f} s")  # fmt: skip
    if counts.skipped or counts.failed:
        note += f"; {counts.skipped} skipped, {counts.failed} failed"
    rate = report.pages_per_second
    per_page_us = worker_cpu / max(written, 1) * 1e6
    cores = len(os.sched_getaffinity(0))
    return [
        Result(NAME, f"pages rewritten/s, {n:,} bulletins", rate, "pages/s",
               f">= {TARGET:,} pages/s", rate >= TARGET, note),
        Result(NAME, "whole rebuild, index pages and feeds included", report.seconds, "s", "",
               None, f"{report.listings_built} of {report.listings} listings rebuilt"),
        Result(NAME, "render worker CPU per page", per_page_us, "µs", "", None,
               f"{cores} cores at {cores * 1e6 / max(per_page_us, 1):,.0f} pages/s if the "
               f"workers had them to themselves; load average {load_before:.1f} before, "
               f"{load_after:.1f} after"),
    ]  # fmt: skip


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (dead ones count as 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=None, help=f"bulletins (default {FULL:,})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} bulletins")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    print(table(run(Options(quick=args.quick, postgres=args.postgres, size=args.size))))


if __name__ == "__main__":
    main()
