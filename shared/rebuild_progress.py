"""What a `bantin rebuild` run has done so far, counted in Redis by the render workers'
batch tasks (services/render/batch.py) and read by the command (services/cli/rebuild.py)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from redis import Redis

PROGRESS_TTL_SECONDS = 24 * 3600


@dataclass
class BatchReport:
    """What one batch (or a whole rebuild, summed) did with its bulletins."""

    pages: int = 0  # article pages rewritten
    tombstones: int = 0  # withdrawal notices rewritten
    skipped: int = 0  # not rebuilt: a render owed, failed, never public, or gone
    failed: int = 0  # in batches that raised until their retries ran out

    @property
    def done(self) -> int:
        return self.pages + self.tombstones + self.skipped + self.failed


def progress_keys(run_id: str) -> tuple[str, str]:
    """(set of finished batch numbers, hash of counts) of one rebuild run."""
    base = f"bantin:rebuild:{run_id}"
    return f"{base}:batches", f"{base}:counts"


# Count a batch once, however often it runs: a redelivered message (a worker killed after
# the writes, before the ack) must not count its pages twice.
_RECORD = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    for i = 3, #ARGV, 2 do
        redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
    end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


def record_batch(redis: Redis, run_id: str, batch_no: int, report: BatchReport) -> None:
    counts: list[Any] = []
    for field in fields(report):
        counts += [field.name, getattr(report, field.name)]
    redis.eval(_RECORD, 2, *progress_keys(run_id), batch_no, PROGRESS_TTL_SECONDS, *counts)


def read_progress(redis: Redis, run_id: str) -> tuple[int, BatchReport]:
    """(batches finished, their counts summed)."""
    batches, counts = progress_keys(run_id)
    pipe = redis.pipeline()
    pipe.scard(batches)
    pipe.hgetall(counts)
    finished, values = pipe.execute()
    report = BatchReport()
    for name, value in values.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key in {field.name for field in fields(report)}:
            setattr(report, key, int(value))
    return int(finished), report
