"""Run wrk (Debian's package) against 127.0.0.1 and read its report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkRun:
    requests: int
    seconds: float
    non_2xx: int
    p50_ms: float
    p99_ms: float
    # Counted by a script made with `unique_post_script`: answers with the expected status,
    # and every other answer (None: the script did not count).
    expected: int | None = None
    unexpected: int | None = None

    @property
    def ok_per_second(self) -> float:
        """Answers with the expected status per second when the script counted them, else
        2xx and 3xx answers per second."""
        if self.expected is not None:
            return self.expected / self.seconds
        return (self.requests - self.non_2xx) / self.seconds

    @property
    def errors(self) -> int:
        return self.unexpected if self.unexpected is not None else self.non_2xx


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise RuntimeError(f"unexpected duration in wrk output: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def post_script(path: Path, body: object, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# Each request gets its own Idempotency-Key (run token + wrk thread + counter), so every one
# is a new bulletin, and the script counts answers by status: a 200 replay or a 429 is a 2xx
# or a 4xx to wrk, but only `expected` means accepted here.
_UNIQUE_POST = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
function init(args)
  n, good, bad = 0, 0, 0
  body = %(body)s
  headers = %(headers)s
end
function request()
  n = n + 1
  headers["Idempotency-Key"] = %(run)s .. "-" .. tid .. "-" .. n
  return wrk.format("POST", nil, headers, body)
end
function response(status, headers, body)
  if status == %(status)d then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, thread in ipairs(threads) do
    g = g + thread:get("good")
    b = b + thread:get("bad")
  end
  io.write(string.format("EXPECTED %%d\\nUNEXPECTED %%d\\n", g, b))
end
"""


def _lua(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid Lua string here


def unique_post_script(path: Path, body: object, headers: dict[str, str], run: str,
                       status: int = 202) -> Path:  # fmt: skip
    """A wrk script POSTing `body` with a new Idempotency-Key per request; counts answers
    whose status is `status` and the others."""
    table = "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in headers.items()) + "}"
    path.write_text(
        _UNIQUE_POST
        % {
            "body": _lua(json.dumps(body, ensure_ascii=False)),
            "headers": table,
            "run": _lua(run),
            "status": status,
        }
    )
    return path


def run_wrk(
    url: str,
    *,
    seconds: int,
    connections: int,
    threads: int = 1,
    script: Path | None = None,
    headers: dict[str, str] | None = None,
) -> WrkRun:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only ever load this machine")
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: apt-get install wrk")
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    summary = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    if summary is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    expected = re.search(r"^EXPECTED (\d+)$", output, re.M)
    unexpected = re.search(r"^UNEXPECTED (\d+)$", output, re.M)
    return WrkRun(
        requests=int(summary.group(1)),
        seconds=_ms(summary.group(2)) / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        p50_ms=_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)),  # type: ignore[union-attr]
        expected=int(expected.group(1)) if expected else None,
        unexpected=int(unexpected.group(1)) if unexpected else None,
    )
