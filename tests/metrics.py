"""Reading Prometheus metrics in tests: this process's registry, a scraped exposition, and
promtool's verdict on one."""

from __future__ import annotations

import subprocess

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def snapshot(*names: str) -> Series:
    """The current value of every series of these samples in this process's registry."""
    values: Series = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in names:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def changes(before: Series, after: Series) -> Series:
    """The series that moved between two snapshots, by how much."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample of a scraped exposition, summed over the labels not given; None if absent."""
    values = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def promtool_problems(body: bytes) -> str:
    """What `promtool check metrics` finds wrong with an exposition ('' when nothing)."""
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=30, check=False)  # fmt: skip
    return "" if done.returncode == 0 else (done.stdout + done.stderr).decode()
