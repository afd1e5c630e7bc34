# The referral program: `make demo` on a fresh machine, `make test` before every push.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 4200
# Only the stack targets talk to the local server; tests start their own.
STACK := REFERRALS_PREFECT_PORT=$(PORT) PREFECT_HOME=$(CURDIR)/.prefect \
	PREFECT_API_URL=http://127.0.0.1:$(PORT)/api PREFECT_UI_API_URL=http://127.0.0.1:$(PORT)/api

.PHONY: help install demo up down test test-postgres lint lint-imports format typecheck bench bench-cycle-1m clean clean-demo

help:
	@echo "make demo      create .venv, start a local Prefect server + worker, run the sample cycle"
	@echo "make test      the whole suite (SQLite, plus Postgres when REFERRALS_TEST_POSTGRES_URL is set)"
	@echo "make up/down   start/stop the local Prefect server and worker (by PID)"
	@echo "make lint lint-imports format typecheck bench bench-cycle-1m clean clean-demo"

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

# Every benchmark twice at the same sizes (bench._compare): each prints its Targets table
# (wanted / measured / met), then the two runs' figures side by side (within 15 %?).
# The 1,000,000-customer cycle takes minutes on its own: `make bench-cycle-1m`.
# The cycle's Prefect server keeps its state on PostgreSQL, as the README advises past
# one machine (Prefect's SQLite server makes its calls wait now and then); `make bench
# BENCH_PREFECT_DB=` runs it on the test harness's SQLite server instead.
BENCH_PREFECT_DB ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
bench: install
	@set -e; for b in bench/[a-z]*.py; do \
	  name=$$(basename $$b .py); \
	  case $$name in \
	    cycle) args="--n 10000,100000 $(if $(BENCH_PREFECT_DB),--prefect-database-url $(BENCH_PREFECT_DB))";; \
	    detection|ingest) args="--n 1000000";; \
	    send_asks) args="--n 100000";; \
	    *) args="";; \
	  esac; \
	  echo "== bench.$$name $$args (twice)"; $(BIN)/python -m bench._compare bench.$$name $$args; done

bench-cycle-1m: install
	$(BIN)/python -m bench.cycle --n 100000,1000000 $(if $(BENCH_PREFECT_DB),--prefect-database-url $(BENCH_PREFECT_DB))

clean-demo: down
	rm -rf data .prefect .run

clean: clean-demo
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
