"""`python -m bench`: every scenario against real systems it starts, a table, BENCHMARKS.md.

    python -m bench                       # full run, SQLite, writes BENCHMARKS.md
    python -m bench --quick               # every scenario small: about a minute or two
    python -m bench ingest --size 5       # one scenario; --size is its own size parameter
    python -m bench --postgres            # PostgreSQL instead of the embedded SQLite

Scenarios: ingest (1), latency (2, with 7 memory), rebuild (3), feed-cost (4), gateway (5),
scaling (6), push-latency (8, WebSub), console-publish (9, the web console), and, only when
named, hosts (10: the many-hosts demo in network namespaces; root, `make hosts-demo`). A
benchmark measures and reports; it never fails on a poor number. The exit status is 1 when a
scenario did not complete (the hosts demo raises when a page or feed is wrong).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.core import Options, Result, table, write_markdown

SCENARIOS = {
    "ingest": "bench.ingest",
    "latency": "bench.latency",
    "rebuild": "bench.rebuild",
    "feed-cost": "bench.feed_cost",
    "gateway": "bench.gateway",
    "scaling": "bench.scaling",
    "push-latency": "bench.push_latency",
    "console-publish": "bench.console_publish",
    "hosts": "bench.hosts",
}
# Run only when named: the hosts demo needs root and makes network namespaces and a bridge.
ONLY_WHEN_NAMED = {"hosts"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL, not SQLite")
    parser.add_argument("--size", type=int, help="the scenario's size parameter")
    parser.add_argument(
        "--output", type=Path, help="markdown file (default: BENCHMARKS.md for a full run)"
    )
    args = parser.parse_args(argv)
    if unknown := set(args.scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = args.scenarios or [name for name in SCENARIOS if name not in ONLY_WHEN_NAMED]
    options = Options(quick=args.quick, postgres=args.postgres, size=args.size)
    options.workdir.mkdir(parents=True, exist_ok=True)

    results: list[Result] = []
    failed = 0
    for name in chosen:
        run: Callable[[Options], list[Result]] = importlib.import_module(SCENARIOS[name]).run
        started = time.monotonic()
        print(f"== {name} ...", file=sys.stderr, flush=True)
        try:
            results += run(options)
        except Exception as exc:  # report the failure in the table and go on with the rest
            traceback.print_exc()
            failed += 1
            results.append(Result(name, "did not complete", f"{type(exc).__name__}: {exc}"))
        print(f"== {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(table(results))
    full_run = not args.scenarios and not args.quick
    output = args.output or (Path("BENCHMARKS.md") if full_run else options.workdir / "last-run.md")
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_markdown(output, results, command.strip(), options)
    print(f"\nwritten to {output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # each scenario has cleaned up after itself on the way out
        print("\ninterrupted", file=sys.stderr)
        raise SystemExit(130) from None
