"""Scenario 1: sustained POST /v1/bulletins from wrk (2 threads, 64 connections, a new
Idempotency-Key per request, any answer but 202 counted as an error), and the batch endpoint.

Measured twice: with the workers paused (SIGSTOP), which is what "one ingest process" can take,
and with the whole system working (render and feed workers busy on the same two cores). Besides
wall-clock throughput (noisy on a shared machine), it reports the ingest process's own CPU per
accepted bulletin, read from /proc: the figure an optimisation is judged by.

Alone: `python -m bench.ingest [--postgres] [--seconds 10] [--rounds N] [--in-process]`.
`--in-process` drives a second copy of the ingest app directly (ASGI calls, no HTTP server, no
wrk, 64 requests at a time, on the system's own database and Redis) and reports its CPU per
accepted bulletin: far less noisy than the wrk run on a shared machine, and it leaves out only
uvicorn's HTTP parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core import Options, Result
from bench.system import pause, resume, running_system
from bench.wrk import WrkRun, post_script, run_wrk, unique_post_script
from shared.testing import System

NAME = "1 ingest"
BULLETIN = {
    "title": "Thông báo lịch tiếp công dân định kỳ tháng 12 năm 2026",
    "summary": "UBND tỉnh thông báo lịch tiếp công dân định kỳ của Chủ tịch UBND tỉnh.",
    "body": "Đoạn một của bản tin, như các cơ quan vẫn gửi.\n\n" * 6,
    "author": "Văn phòng UBND tỉnh",
    "category": "Tiếp công dân",
}
CONNECTIONS = 64
THREADS = 2
INGEST_ROLE = "services.ingest.app"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Load:
    run: WrkRun
    cpu_us: float  # ingest's CPU per accepted bulletin (per bulletin for batches)


def ingest_pid(system: System) -> int:
    [(pid, _parent)] = system.processes(INGEST_ROLE)  # one process: what is measured
    return pid


def load(system: System, url: str, script: Path, seconds: int, connections: int,
         per_request: int = 1) -> Load:  # fmt: skip
    pid = ingest_pid(system)
    before = cpu_seconds(pid)
    run = run_wrk(url, seconds=seconds, connections=connections, threads=THREADS, script=script)
    used = cpu_seconds(pid) - before
    accepted = run.ok_per_second * run.seconds * per_request
    return Load(run, used / accepted * 1e6 if accepted else float("nan"))


def scripts(system: System) -> tuple[Path, Path]:
    key = (system.data_dir / "demo-agency.key").read_text().strip()  # bac-kan
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    single = unique_post_script(system.data_dir / "post.lua", BULLETIN, headers,
                                run=uuid.uuid4().hex[:12])  # fmt: skip
    batch = post_script(system.data_dir / "batch.lua", {"bulletins": [BULLETIN] * 100}, headers)
    return single, batch


def run(options: Options) -> list[Result]:
    seconds = options.size or (5 if options.quick else 10)
    results: list[Result] = []
    with running_system(options, "ingest") as system:
        single, batch = scripts(system)
        url = system.ingest_url + "/v1/bulletins"
        for label, paused in (("alone (workers paused)", True), ("whole system working", False)):
            stopped = pause(system, "worker ") if paused else []
            try:
                one = load(system, url, single, seconds, CONNECTIONS)
                many = load(system, url + ":batch", batch, seconds, 4, per_request=100)
            finally:
                resume(stopped)
            errors = f"{one.run.errors} not 202" if one.run.errors else "all 202"
            results += [
                Result(NAME, f"accepted/s, wrk {CONNECTIONS} connections, {label}",
                       one.run.ok_per_second, "/s", ">= 2000/s", one.run.ok_per_second >= 2000,
                       errors),
                Result(NAME, f"p50 latency, {label}", one.run.p50_ms, "ms"),
                Result(NAME, f"p99 latency, {label}", one.run.p99_ms, "ms", "< 50 ms",
                       one.run.p99_ms < 50),
                Result(NAME, f"ingest CPU per accepted bulletin, {label}", one.cpu_us, "µs"),
                Result(NAME, f"batch of 100: bulletins/s, 4 clients, {label}",
                       many.run.ok_per_second * 100, "/s", "", None,
                       f"p99 {many.run.p99_ms:.0f} ms per batch, "
                       f"ingest CPU {many.cpu_us:.0f} µs a bulletin"),
            ]  # fmt: skip
    return results


def in_process_cpu_us(system: System, rounds: int, requests: int = 2560,
                     concurrency: int = 64) -> list[float]:  # fmt: skip
    """CPU of this process per accepted POST through the whole ingest app, per round."""
    from services.ingest.app import create_app
    from shared.settings import Settings

    settings = Settings(data_dir=system.data_dir,
                        database_url=system.env.get("BANTIN_DATABASE_URL"),
                        rate_limit=system.env["BANTIN_RATE_LIMIT"])  # fmt: skip
    app = create_app(settings)
    key = (system.data_dir / "demo-agency.key").read_text().strip()
    body = json.dumps(BULLETIN, ensure_ascii=False).encode()
    refused: list[int] = []

    async def post(idempotency_key: str) -> None:
        headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode()),
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"idempotency-key", idempotency_key.encode())]  # fmt: skip
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/bulletins",
                 "raw_path": b"/v1/bulletins", "query_string": b"", "root_path": "",
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "headers": headers,
                 "state": {}}  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client never hangs up
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 202:
                refused.append(int(message["status"]))

        await app(scope, receive, send)

    async def clients(tag: str, count: int) -> None:
        async def client(c: int) -> None:
            for i in range(count // concurrency):
                await post(f"{tag}-{c}-{i}")

        await asyncio.gather(*(client(c) for c in range(concurrency)))

    async def measure() -> list[float]:
        run = uuid.uuid4().hex[:8]
        await clients(f"{run}-warm", concurrency * 10)
        used = []
        for r in range(rounds):
            before = time.process_time()
            await clients(f"{run}-{r}", requests)
            used.append((time.process_time() - before) / requests * 1e6)
        return used

    try:
        used = asyncio.run(measure())
    finally:
        app.state.writer.close()
    if refused:
        raise RuntimeError(f"{len(refused)} answers were not 202: {sorted(set(refused))}")
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="single-POST runs, paused")
    parser.add_argument("--in-process", action="store_true", help="ASGI calls, no wrk")
    args = parser.parse_args()
    options = Options(postgres=args.postgres)
    with running_system(options, "ingest") as system:
        single, _batch = scripts(system)
        stopped = pause(system, "worker ")
        try:
            if args.in_process:
                used = in_process_cpu_us(system, args.rounds)
                print("in-process CPU µs per accepted bulletin, per round:",
                      " ".join(f"{u:.0f}" for u in used))  # fmt: skip
                return
            for _ in range(args.rounds):
                one = load(system, system.ingest_url + "/v1/bulletins", single, args.seconds,
                           CONNECTIONS)  # fmt: skip
                print(f"accepted/s {one.run.ok_per_second:.0f}  errors {one.run.errors}  "
                      f"p50 {one.run.p50_ms:.1f} ms  p99 {one.run.p99_ms:.1f} ms  "
                      f"ingest CPU {one.cpu_us:.0f} µs/accepted  (pid {ingest_pid(system)})",
                      flush=True)  # fmt: skip
        finally:
            resume(stopped)


if __name__ == "__main__":
    main()
