# The referral program: `make demo` on a fresh machine, `make test` before every push.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 4200
# Only the stack targets talk to the local server; tests start their own.
STACK := REFERRALS_PREFECT_PORT=$(PORT) PREFECT_HOME=$(CURDIR)/.prefect \
	PREFECT_API_URL=http://127.0.0.1:$(PORT)/api PREFECT_UI_API_URL=http://127.0.0.1:$(PORT)/api

.PHONY: help install demo up down test test-postgres lint lint-imports format typecheck bench clean clean-demo

help:
	@echo "make demo      create .venv, start a local Prefect server + worker, run the sample cycle"
	@echo "make test      the whole suite (SQLite, plus Postgres when REFERRALS_TEST_POSTGRES_URL is set)"
	@echo "make up/down   start/stop the local Prefect server and worker (by PID)"
	@echo "make lint lint-imports format typecheck bench clean clean-demo"

$(BIN)/referrals: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/referrals

up: install
	$(STACK) $(BIN)/referrals up

down:
	@if [ -x $(BIN)/referrals ]; then $(STACK) $(BIN)/referrals down; else echo "nothing to stop"; fi

demo: up
	$(STACK) $(BIN)/referrals demo

# Two workers (pytest-xdist): the machines have 2 CPUs, and the suite spends much of its
# time waiting on servers and databases. tests/conftest.py decides what runs where.
TEST_WORKERS ?= 2
test: install
	env -u PREFECT_API_URL -u PREFECT_HOME $(BIN)/pytest -q -n $(TEST_WORKERS)

lint: install lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The layers contract in pyproject.toml ([tool.importlinter]).
lint-imports: install
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

bench: install
	@set -e; for b in bench/[a-z]*.py; do \
	  name=$$(basename $$b .py); echo "== bench.$$name"; $(BIN)/python -m bench.$$name; done

clean-demo: down
	rm -rf data .prefect .run

clean: clean-demo
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
