"""Scenario 3: `bantin rebuild` re-renders every page and feed of a large archive.

    python -m bench.rebuild [--size N] [--quick] [--postgres]

Starts a real system (`bantin up`: embedded Redis, the render worker with its default
concurrency, one process per core), writes N published bulletins straight into its database
(bench/archive.py), then runs the rebuild as the operator's command does (`run_rebuild`,
in-process, against the system's Redis and database) and reports the rate at which pages
were rewritten: from the first batch sent to the last batch counted done. Meanwhile a
bulletin is published every second through the API, timed to its page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import httpx

from bench.archive import populate
from bench.core import Options, Result, table
from bench.system import running_system
from services.cli.rebuild import DEFAULT_BATCH_SIZE, DEFAULT_WINDOW, run_rebuild
from shared.testing import System

NAME = "3 rebuild"
TARGET = 5_000  # pages/s (issue 11)
FULL, QUICK = 100_000, 5_000
PROBE_TIMEOUT_SECONDS = 60.0


def run(options: Options) -> list[Result]:
    n = options.size or (QUICK if options.quick else FULL)
    with running_system(options, "rebuild") as system:
        cleanup = system.data_dir  # ~1.6 GB at 100k (database and pages): not kept
        settings = system.settings()
        started = time.perf_counter()
        populate(settings, n)
        populated = time.perf_counter() - started
        workers = [pid for pid, _ in system.processes("worker render")]
        cpu_before, load_before = cpu_seconds(workers), os.getloadavg()[0]
        kernel_before = cpu_seconds(workers, kernel_only=True)
        probe = PublishProbe(system)
        probe.start()
        try:
            report = run_rebuild(settings, batch_size=DEFAULT_BATCH_SIZE, progress=False)
        finally:
            probe.stop.set()
            probe.join(PROBE_TIMEOUT_SECONDS)
        worker_cpu, load_after = cpu_seconds(workers) - cpu_before, os.getloadavg()[0]
        kernel_cpu = cpu_seconds(workers, kernel_only=True) - kernel_before
        processes = len(workers) - 1  # the main process and its pool
    shutil.rmtree(cleanup, ignore_errors=True)
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
               f"workers had them to themselves; {kernel_cpu / max(worker_cpu, 1e-9):.0%} of it "
               f"in the kernel (two files a page: the page and its .gz, each written and "
               f"renamed); load average {load_before:.1f} before, {load_after:.1f} after"),
        Result(NAME, "a new bulletin's page, published during the rebuild (median)",
               statistics.median(probe.latencies) if probe.latencies else "n/a", "ms", "", None,
               f"max {max(probe.latencies, default=0):,.0f} ms of {len(probe.latencies)}, one "
               f"a second; it queues behind at most {DEFAULT_WINDOW} batches, not the archive"),
    ]  # fmt: skip


class PublishProbe(threading.Thread):
    """Publishes a bulletin every second while the rebuild runs, and times each one from
    the POST to its page answering 200: what a rebuild costs the site's freshness."""

    def __init__(self, system: System) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.stop = threading.Event()
        self.latencies: list[float] = []

    def run(self) -> None:
        key = (self.system.data_dir / "demo-agency.key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(timeout=10) as http:
            while not self.stop.wait(1.0):
                started = time.perf_counter()
                answer = http.post(f"{self.system.ingest_url}/v1/bulletins", headers=headers,
                                   json={"title": "Thông báo trong lúc dựng lại trang",
                                         "body": "Nội dung thông báo."})  # fmt: skip
                url = answer.json()["url"]
                while http.get(url).status_code != 200:
                    if time.perf_counter() - started > PROBE_TIMEOUT_SECONDS:
                        return
                    time.sleep(0.005)
                self.latencies.append((time.perf_counter() - started) * 1000)


def cpu_seconds(pids: list[int], *, kernel_only: bool = False) -> float:
    """User + system CPU time of these processes so far (dead ones count as 0); only the
    system (kernel) part with `kernel_only`."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime (fields 14 and 15)
        ticks += (0 if kernel_only else int(fields[11])) + int(fields[12])
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
