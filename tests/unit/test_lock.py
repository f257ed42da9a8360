"""The lock files make every install the same: exact pins, hashes, and the runtime lock a subset
of the dev lock. `make lock` writes them (README, "Upgrading dependencies")."""

from __future__ import annotations

import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
# Locked at exactly their pyproject.toml lower bound (Makefile's AT_FLOOR): nh3 before 0.3.7
# let markup through attribute values, so the suite must run against the oldest allowed one.
AT_FLOOR = ("nh3",)


@dataclass(frozen=True)
class Pin:
    line: str
    requirement: Requirement
    hashes: tuple[str, ...]


def read_lock(path: Path) -> dict[NormalizedName, Pin]:
    """Each requirement of a pip-compile lock, its continuation lines joined, comments dropped."""
    pins: dict[NormalizedName, Pin] = {}
    for raw in path.read_text().replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        requirement = Requirement(spec)  # an option line (-i, -f, -e ...) fails to parse here
        hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} twice"
        pins[name] = Pin(line, requirement, hashes)
    return pins


def locked_version(pin: Pin) -> Version:
    (specifier,) = pin.requirement.specifier  # exactly one: `name==version`
    assert specifier.operator == "==" and "*" not in specifier.version, pin.line
    return Version(specifier.version)


RUNTIME = read_lock(RUNTIME_LOCK)
DEV = read_lock(DEV_LOCK)
LOCKS = {RUNTIME_LOCK.name: RUNTIME, DEV_LOCK.name: DEV}


def _declared(group: list[str]) -> dict[NormalizedName, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, group)}


DECLARED_RUNTIME = _declared(PROJECT["dependencies"])
DECLARED_TEST = _declared(PROJECT["optional-dependencies"]["test"])


@pytest.mark.parametrize("lock", LOCKS, ids=str)
def test_every_package_is_pinned_exactly_with_hashes(lock: str) -> None:
    pins = LOCKS[lock]
    assert len(pins) > 20, "a lock that lost its packages"
    for name, pin in pins.items():
        locked_version(pin)
        assert not pin.requirement.extras and pin.requirement.url is None, pin.line
        assert pin.hashes, f"{lock}: {name} has no hash"
        assert all(h.startswith("sha256:") and len(h) == len("sha256:") + 64 for h in pin.hashes)


def test_the_dev_lock_holds_every_runtime_pin_at_the_same_version() -> None:
    differing = {
        name: (locked_version(pin), locked_version(DEV[name]) if name in DEV else None)
        for name, pin in RUNTIME.items()
        if name not in DEV or locked_version(DEV[name]) != locked_version(pin)
    }
    assert differing == {}
    assert all(set(RUNTIME[name].hashes) <= set(DEV[name].hashes) for name in RUNTIME)


@pytest.mark.parametrize(
    ("lock", "declared"),
    [
        (RUNTIME, DECLARED_RUNTIME),
        (DEV, DECLARED_RUNTIME),
        (DEV, DECLARED_TEST),
    ],
    ids=["runtime-in-runtime-lock", "runtime-in-dev-lock", "test-in-dev-lock"],
)
def test_every_declared_dependency_is_locked_within_its_range(
    lock: dict[NormalizedName, Pin], declared: dict[NormalizedName, Requirement]
) -> None:
    missing = sorted(set(declared) - set(lock))
    assert missing == []
    outside = {
        name: str(locked_version(lock[name]))
        for name, requirement in declared.items()
        if not requirement.specifier.contains(locked_version(lock[name]), prereleases=True)
    }
    assert outside == {}


def test_the_runtime_lock_holds_no_test_tool() -> None:
    # Some test extras (lxml, PyYAML) are also runtime dependencies of dependencies; these are not.
    tools = {"pytest", "playwright", "mypy", "ruff", "schemathesis", "hypothesis", "html5lib"}
    assert tools <= set(DECLARED_TEST)
    assert tools & set(RUNTIME) == set()


@pytest.mark.parametrize("name", AT_FLOOR)
def test_the_sanitiser_is_tested_against_the_oldest_allowed_version(name: str) -> None:
    floors = [s.version for s in DECLARED_RUNTIME[canonicalize_name(name)].specifier
              if s.operator == ">="]  # fmt: skip
    assert len(floors) == 1, "pyproject.toml must give this package one lower bound"
    floor = Version(floors[0])
    assert locked_version(RUNTIME[canonicalize_name(name)]) == floor
    assert locked_version(DEV[canonicalize_name(name)]) == floor


def test_nothing_pulls_in_torch_or_cuda() -> None:
    heavy = {n for n in DEV if n in {"torch", "triton"} or n.startswith(("nvidia-", "cuda-"))}
    assert heavy == set()


def test_the_environment_running_the_suite_matches_the_dev_lock() -> None:
    """`make install` syncs the venv to the lock; a stale venv would test other versions."""
    installed = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version)
        for dist in importlib.metadata.distributions()
    }
    stale = {
        name: (str(installed.get(name)), str(locked_version(pin)))
        for name, pin in DEV.items()
        if installed.get(name) != locked_version(pin)
    }
    assert stale == {}, "run `make install` (installed, locked)"


def test_every_install_goes_through_a_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    # `make run`: the runtime lock only; `make test`: the dev lock on top; then Bantin itself.
    run_recipe = makefile.split("$(RUN_STAMP): pyproject.toml requirements.lock", 1)[1]
    run_recipe = run_recipe.split("\n\n", 1)[0]
    assert "pip install --progress-bar on --require-hashes -r requirements.lock" in run_recipe
    assert "requirements-dev.lock" not in run_recipe
    assert "pip install --quiet --no-deps -e ." in run_recipe
    assert "pip install --progress-bar on --require-hashes -r requirements-dev.lock" in makefile
    assert "\nrun: $(RUN_STAMP)" in makefile and "\ntest: $(STAMP)" in makefile
    assert "pip install --require-hashes -r /tmp/requirements.lock" in dockerfile
    assert "COPY requirements.lock " in dockerfile
    assert "--no-deps" in dockerfile.split("COPY --from=build /wheels", 1)[1]
