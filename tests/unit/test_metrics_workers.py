"""Worker-side metrics: the multiprocess registry, the task signals and the queue collector.

Multiprocess mode changes prometheus-client's process-wide value class, so those checks run
in a child interpreter, never in the test process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis import Redis

from services.reconciler.metrics import QueueCollector
from shared.db import create_schema
from shared.models import utcnow
from shared.settings import Settings
from tests.metrics import sample

PROMTOOL = shutil.which("promtool")

# Two pool processes run tasks (one of them exits), then the parent serves the sum.
POOL = textwrap.dedent(
    """
    import os, sys
    from shared.metrics import enable_multiprocess, exposition, mark_dead_processes
    directory = enable_multiprocess()
    assert os.listdir(directory) == []
    from shared import worker_metrics

    class Request:
        delivery_info = {"routing_key": "render"}

    class Task:
        name = "render.bulletin"
        request = Request()

    def run(task_id, state):
        worker_metrics.on_task_prerun(task_id=task_id, task=Task())
        worker_metrics.on_task_postrun(task_id=task_id, task=Task(), state=state)

    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            run(f"a{n}", "SUCCESS")
            run(f"b{n}", "RETRY")
            worker_metrics.TASKS_ACTIVE.labels("render").inc()  # still "running" at exit
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    run("c", "FAILURE")
    before = exposition()[0].decode()
    mark_dead_processes({os.getpid()})
    sys.stdout.write(before + "\\n=====\\n" + exposition()[0].decode())
    """
)


def test_pool_processes_are_summed_and_dead_ones_leave_the_live_gauges() -> None:
    done = subprocess.run(
        [sys.executable, "-c", POOL], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split("\n=====\n")
    task = {"queue": "render", "task": "render.bulletin"}
    assert sample(before, "bantin_tasks_total", **task, outcome="success") == 2
    assert sample(before, "bantin_tasks_total", **task, outcome="retry") == 2
    assert sample(before, "bantin_tasks_total", **task, outcome="failure") == 1
    assert sample(before, "bantin_task_duration_seconds_count", **task) == 5
    assert sample(before, "bantin_tasks_active", queue="render") == 2  # the exited children
    assert sample(after, "bantin_tasks_active", queue="render") == 0  # marked dead
    assert sample(after, "bantin_tasks_total", **task, outcome="success") == 2  # counts stay
    if PROMTOOL:
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=after, capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_each_worker_start_gets_a_fresh_directory_removed_at_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from shared.metrics import enable_multiprocess
        print(enable_multiprocess({str(tmp_path)!r}))
        print(enable_multiprocess({str(tmp_path)!r}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split()
    assert first != second and Path(first).parent == tmp_path
    assert not Path(first).exists() and not Path(second).exists()  # removed at exit


def test_publish_latency_runs_from_acceptance_or_the_embargos_end() -> None:
    from shared import worker_metrics

    def observed() -> tuple[float, float]:
        text = generate_latest().decode()
        count = sample(text, "bantin_publish_latency_seconds_count") or 0
        return count, sample(text, "bantin_publish_latency_seconds_sum") or 0

    count, total = observed()
    now = utcnow()
    # Accepted an hour ago under an embargo that ended a minute ago: owed for a minute.
    worker_metrics.observe_publish(now - timedelta(hours=1), now - timedelta(minutes=1))
    new_count, new_total = observed()
    assert new_count == count + 1
    assert 60 <= new_total - total < 3600


def test_queue_collector_reports_each_queue_and_says_when_it_cannot(
    tmp_path: Path, private_redis: str
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    create_schema(settings)
    redis = Redis.from_url(private_redis)
    redis.flushdb()
    redis.rpush("render", "m1", "m2")
    registry = CollectorRegistry()
    registry.register(QueueCollector(settings, redis))
    text = generate_latest(registry).decode()
    assert sample(text, "bantin_queue_depth", queue="render") == 2
    assert sample(text, "bantin_queue_depth", queue="feed") == 0
    assert sample(text, "bantin_queue_oldest_age_seconds", queue="render") == 0
    assert sample(text, "bantin_queue_stats_up") == 1

    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    down = CollectorRegistry()
    down.register(QueueCollector(settings, unreachable))
    text = generate_latest(down).decode()
    assert sample(text, "bantin_queue_stats_up") == 0
    assert sample(text, "bantin_queue_depth") is None  # no made-up numbers


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is missing")
def test_the_reconcilers_registry_passes_promtool(tmp_path: Path, private_redis: str) -> None:
    from prometheus_client import REGISTRY

    import services.reconciler.metrics  # noqa: F401 - registers the reconciler's metrics

    settings = Settings(data_dir=tmp_path, redis_url=private_redis)
    create_schema(settings)
    registry = CollectorRegistry()
    registry.register(QueueCollector(settings, Redis.from_url(private_redis)))
    for body in (generate_latest(registry), generate_latest(REGISTRY)):
        check = subprocess.run(
            [str(PROMTOOL), "check", "metrics"], input=body, capture_output=True, timeout=30,
            check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is missing")
def test_the_scrape_config_and_every_dashboard_query_are_valid(tmp_path: Path) -> None:
    config = subprocess.run(
        [str(PROMTOOL), "check", "config", "--syntax-only", str(DEPLOY / "prometheus.yml")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
    dashboard = json.loads((DEPLOY / "grafana" / "bantin.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{n}", "expr": expr} for n, expr in enumerate(exprs)
    ]}]}  # fmt: skip
    (tmp_path / "rules.yml").write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # The worker-side series the dashboard reads are ones the workers define.
    text = " ".join(exprs)
    for name in ("bantin_queue_depth", "bantin_queue_oldest_age_seconds",
                 "bantin_publish_latency_seconds_bucket", "bantin_tasks_total",
                 "bantin_listing_builds_total", "bantin_reconciler_actions_total"):  # fmt: skip
        assert name in text, name
