"""Worker-side metrics: the multiprocess registry, the task signals and the queue collector.

Multiprocess mode changes prometheus-client's process-wide value class, so those checks run
in a child interpreter, never in the test process.
"""

from __future__ import annotations

import json
import os
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
ROOT = Path(__file__).resolve().parents[2]

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


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(30)
    return done.pid


def child_env(tmp_path: Path, redis_url: str = "redis://127.0.0.1:1/0") -> dict[str, str]:
    """A child's environment: its temporary directory in tmp_path/tmp, no metrics directory
    set, Bantin pointed at tmp_path (its Redis is never reached unless a test means it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANTIN_", "PROMETHEUS_"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return env | {
        "TMPDIR": str(tmp_path / "tmp"),
        "BANTIN_DATA_DIR": str(tmp_path / "var"),
        "BANTIN_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }


def run_child(script: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
        timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_start_gets_its_pids_directory_and_sweeps_dead_ones(tmp_path: Path) -> None:
    base = tmp_path / "metrics"
    stale, alive = f"bantin-metrics-{dead_pid()}", f"bantin-metrics-{os.getpid()}"
    for name in (stale, alive, "bantin-metrics-notapid", "other"):
        (base / name).mkdir(parents=True)
        (base / name / "counter_1.db").write_bytes(b"old samples")
    out = run_child(
        f"""
        import os
        from shared.metrics import enable_multiprocess
        base = {str(base)!r}
        # A killed process with this pid left its directory: its samples must not count.
        os.makedirs(os.path.join(base, f"bantin-metrics-{{os.getpid()}}"))
        open(os.path.join(base, f"bantin-metrics-{{os.getpid()}}", "counter_9.db"), "w").close()
        first = enable_multiprocess(base)
        assert enable_multiprocess(base) == first  # a second call: the same directory
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == first
        print(os.getpid(), first, os.listdir(first))
        """,
        child_env(tmp_path),
    )
    pid, directory, listing = out.split(maxsplit=2)
    assert Path(directory) == base / f"bantin-metrics-{pid}"
    assert listing.strip() == "[]"  # emptied of the dead namesake's files
    assert not Path(directory).exists()  # removed at exit
    assert not (base / stale).exists()  # a dead process's: swept
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [alive, "bantin-metrics-notapid", "other"]
    )  # a live process's and what is not ours: kept


def test_celery_inspect_creates_no_metrics_directory_but_a_worker_start_does(
    tmp_path: Path, private_redis: str
) -> None:
    """The compose healthcheck runs `celery -A services.cli.worker inspect ping` every 30 s:
    it must leave nothing behind. A worker (which imports the task modules) does make one."""
    env = child_env(tmp_path, private_redis)
    stale = tmp_path / "tmp" / f"bantin-metrics-{dead_pid()}"
    stale.mkdir()
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "services.cli.worker", "inspect", "ping",
         "--timeout", "1"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert "No nodes replied" in ping.stdout + ping.stderr  # it ran, and reached Redis
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == [stale.name]

    out = run_child(
        """
        import os
        import services.cli.worker as worker
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # importing it made nothing
        worker.app.loader.import_default_modules()  # what a worker does as it starts
        from celery.signals import task_prerun
        from shared import worker_metrics
        assert any(r is worker_metrics.on_task_prerun for _, r in task_prerun.receivers)
        print(os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid())
        """,
        env,
    )
    directory, pid = out.split()
    assert Path(directory) == tmp_path / "tmp" / f"bantin-metrics-{pid}"
    assert list((tmp_path / "tmp").iterdir()) == []  # the stale one swept, its own removed


POOL_UNKNOWN = """
    import os, subprocess, sys
    from shared.metrics import enable_multiprocess
    directory = enable_multiprocess()
    import services.cli.worker as worker

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    for pid in (sleeper.pid, done.pid):
        open(os.path.join(directory, f"gauge_livesum_{pid}.db"), "wb").close()

    def files():
        return sorted(int(n.rsplit("_", 1)[1][:-3]) for n in os.listdir(directory))

    class NoInfo:  # a pool being restarted
        pass

    class Pool:
        info = {"processes": [os.getpid() + 1_000_000]}

    class Controller:
        concurrency = 2

    try:
        results = []
        for pool in (None, NoInfo(), Pool()):
            controller = Controller()
            controller.pool = pool
            worker._Node.controller = controller
            info = worker._info()
            results.append([info["pool_pids"], files()])
        print(sleeper.pid, done.pid, results)
    finally:
        sleeper.kill()
"""


def test_an_unknown_pool_marks_no_process_dead(tmp_path: Path) -> None:
    out = run_child(POOL_UNKNOWN, child_env(tmp_path))
    sleeping, exited, results = out.split(maxsplit=2)
    both = sorted([int(sleeping), int(exited)])
    unknown_pool, restarting_pool, known_pool = json.loads(results)
    assert unknown_pool == [[], both]  # no pool: every live gauge file kept
    assert restarting_pool == [[], both]
    # A known pool: the exited process's file goes, the running one's stays, even though
    # the pool did not list it.
    assert known_pool[1] == [int(sleeping)]


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
