"""Scenario 1: sustained POST /v1/bulletins with 32 concurrent clients, and the batch endpoint.

Measured twice: with the whole system working (render and feed workers busy on the same two
cores), and with the workers paused (SIGSTOP), which is what "one ingest process" can take.
"""

from __future__ import annotations

from bench.core import Options, Result
from bench.system import pause, resume, running_system
from bench.wrk import post_script, run_wrk

NAME = "1 ingest"
BULLETIN = {
    "title": "Thông báo lịch tiếp công dân định kỳ tháng 12 năm 2026",
    "summary": "UBND tỉnh thông báo lịch tiếp công dân định kỳ của Chủ tịch UBND tỉnh.",
    "body": "Đoạn một của bản tin, như các cơ quan vẫn gửi.\n\n" * 6,
    "author": "Văn phòng UBND tỉnh",
    "category": "Tiếp công dân",
}


def run(options: Options) -> list[Result]:
    seconds = options.size or (5 if options.quick else 20)
    results: list[Result] = []
    with running_system(options, "ingest") as system:
        key = (system.data_dir / "demo-agency.key").read_text().strip()  # bac-kan
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        single = post_script(system.data_dir / "post.lua", BULLETIN, headers)
        batch = post_script(system.data_dir / "batch.lua", {"bulletins": [BULLETIN] * 100}, headers)
        url = system.ingest_url + "/v1/bulletins"

        for label, paused in (("alone (workers paused)", True), ("whole system working", False)):
            stopped = pause(system, "worker ") if paused else []
            try:
                one = run_wrk(url, seconds=seconds, connections=32, script=single)
                many = run_wrk(url + ":batch", seconds=seconds, connections=4, script=batch)
            finally:
                resume(stopped)
            errors = f"{one.non_2xx} non-2xx" if one.non_2xx else "no errors"
            results += [
                Result(NAME, f"accepted/s, 32 clients, {label}", one.ok_per_second, "/s",
                       ">= 1000/s", one.ok_per_second >= 1000, errors),
                Result(NAME, f"p50 latency, {label}", one.p50_ms, "ms"),
                Result(NAME, f"p99 latency, {label}", one.p99_ms, "ms", "< 50 ms",
                       one.p99_ms < 50),
                Result(NAME, f"batch of 100: bulletins/s, 4 clients, {label}",
                       many.ok_per_second * 100, "/s", "", None,
                       f"p99 {many.p99_ms:.0f} ms per batch"),
            ]  # fmt: skip
    return results
