"""Submit → visible latency of the seed sample through the real system (`bantin up`).

    python -m bench.publish_latency [--runs 20]

For each run: POST the seed bulletin, then poll the gateway until the article page answers
200 (page visible) and until the agency's RSS feed lists it (feed visible). Prints the median
and spread. A benchmark, not a test: it reports numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from services.cli.client import load_bulletin
from shared.testing import start_system, stop_system

SEED = Path(__file__).resolve().parents[1] / "examples" / "000_4fbfac1c975a2018.txt"
POLL_SECONDS = 0.002


def wait_until(check: object, deadline: float) -> float:
    while not check():  # type: ignore[operator]
        if time.perf_counter() > deadline:
            raise TimeoutError
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=Path, default=SEED)
    args = parser.parse_args()

    bulletin = load_bulletin(args.seed, ZoneInfo("Asia/Ho_Chi_Minh"))
    with tempfile.TemporaryDirectory(prefix="bantin-bench-") as data:
        system = start_system(Path(data))
        try:
            key = (Path(data) / "demo-agency.key").read_text().strip()
            page_ms, feed_ms = [], []
            with httpx.Client(timeout=10) as http:
                feed_url = f"{system.gateway_url}/feeds/agency/bac-kan.rss"
                for _ in range(args.runs + 1):  # the first run warms every process up
                    started = time.perf_counter()
                    answer = http.post(
                        f"{system.ingest_url}/v1/bulletins",
                        json=bulletin,
                        headers={
                            "Authorization": f"Bearer {key}",
                            "Idempotency-Key": str(uuid.uuid4()),
                        },
                    )
                    url = answer.json()["url"]
                    deadline = started + 30
                    page_at = wait_until(lambda u=url: http.get(u).status_code == 200, deadline)
                    feed_at = wait_until(
                        lambda u=url: u.encode() in http.get(feed_url).content, deadline
                    )
                    page_ms.append((page_at - started) * 1000)
                    feed_ms.append((feed_at - started) * 1000)
        finally:
            stop_system(system)
    for name, values in (("page visible", page_ms[1:]), ("in agency feed", feed_ms[1:])):
        values.sort()
        print(
            f"{name:>15}: median {statistics.median(values):6.1f} ms  "
            f"min {values[0]:6.1f}  max {values[-1]:6.1f}  (n={len(values)})"
        )


if __name__ == "__main__":
    main()
