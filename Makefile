# Bantin: `make run` starts everything, `make test` runs every test. See README.md.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp

.PHONY: help install run test lint bench clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)  ## Create the virtualenv and install Bantin with its test tools

run: $(STAMP)  ## Set up and start the whole system (embedded Redis and SQLite in ./var)
	$(BIN)/bantin up

test: $(STAMP)  ## Run the whole test suite (unit, integration, browser)
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## Run every benchmark scenario and write BENCHMARKS.md
	$(BIN)/python -m bench

clean:  ## Remove the virtualenv and local data
	rm -rf $(VENV) var
