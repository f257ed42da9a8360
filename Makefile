# Bantin: `make run` starts everything, `make test` runs every test. See README.md.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.runtime-stamp

# The locks are written by pip-tools, kept in a venv of its own so it never mixes with Bantin's
# packages; installing from them needs nothing but pip.
LOCK_TOOLS  := $(VENV)/lock-tools
PIP_TOOLS   := pip-tools==7.6.2
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
# Locked at exactly their pyproject.toml lower bound, so the suite runs against the oldest
# version the project allows (nh3: the sanitiser's safety depends on it).
AT_FLOOR    := nh3
# `make lock LOCK_ARGS=` keeps the current pins and only resolves what pyproject.toml changed.
LOCK_ARGS   ?= --upgrade

.PHONY: help install run test lint bench hosts-demo lock clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# Exactly the locked versions, checked by hash; then Bantin itself, whose dependencies the
# lock already holds. `make run` needs only the runtime lock; `make test` adds the test tools.
$(RUN_STAMP): pyproject.toml requirements.lock
	@echo "==> Installing Bantin's runtime dependencies (requirements.lock) into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP) requirements-dev.lock
	@echo "==> Installing the test tools (requirements-dev.lock) into $(VENV)"
	$(BIN)/pip install --progress-bar on --require-hashes -r requirements-dev.lock
	touch $(STAMP)

install: $(STAMP)  ## Create the virtualenv with everything: runtime, test tools, Bantin

run: $(RUN_STAMP)  ## Set up and start the whole system (embedded Redis and SQLite in ./var)
	$(BIN)/bantin up

test: $(STAMP)  ## Run the whole test suite (unit, integration, browser)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## Run every benchmark scenario and write BENCHMARKS.md
	$(BIN)/python -m bench

# Six network namespaces on a bridge (bt-*, 10.77.0.0/24): PostgreSQL, Redis and S3 on one,
# ingest, two render hosts, a feed host and the gateway on the others; one render host is
# killed mid-run, then every page and feed is checked. Needs root (ip netns); removes all it made.
hosts-demo: $(STAMP)  ## Many-hosts demo in network namespaces (root; about 2 minutes)
	$(BIN)/python -m bench hosts

# docker-compose.yml run for real without an image registry (issue 13): base images from
# Debian packages (debootstrap) and a wheelhouse of requirements.lock, the app image from the
# Dockerfile, up with 4 render and 2 feed workers, load with containers killed, `down -v`.
# Starts a private dockerd when none answers (root) and stops it after; images and the
# wheelhouse are cached (~/.cache/bantin-compose and the engine) for the next run.
.PHONY: compose-test
compose-test: $(STAMP)  ## docker compose, offline: scaled up, containers killed (root; ~10 min)
	PYTHON=$(BIN)/python tests/compose/run.sh

# The dev lock is resolved first (runtime + test extras); the runtime lock is then resolved
# under it as a constraint, so both hold the very same version of every shared package.
lock:  ## Re-resolve requirements-dev.lock and requirements.lock from pyproject.toml
	test -x $(LOCK_TOOLS)/bin/pip-compile \
	  || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet $(PIP_TOOLS); }
	$(LOCK_TOOLS)/bin/python -c 'import sys, tomllib; from packaging.requirements import Requirement; \
	  deps = map(Requirement, tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]); \
	  print(*(f"{r.name}=={s.version}" for r in deps if r.name in sys.argv[1:] \
	          for s in r.specifier if s.operator == ">="), sep="\n")' $(AT_FLOOR) \
	  > $(LOCK_TOOLS)/floors.txt
	$(PIP_COMPILE) $(LOCK_ARGS) --extra test --constraint $(LOCK_TOOLS)/floors.txt \
	  --output-file requirements-dev.lock pyproject.toml
	$(PIP_COMPILE) --upgrade --constraint requirements-dev.lock \
	  --output-file requirements.lock pyproject.toml

clean:  ## Remove the virtualenv and local data
	rm -rf $(VENV) var
