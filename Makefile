# auditlog: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help setup run test test-unit test-faults screenshots lint fmt typecheck migrate clean bench

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup:  ## Install everything (TimescaleDB, .venv, dependencies) and migrate the database
	bash scripts/setup.sh

run: setup  ## Set up, then start the whole topology in the foreground (Ctrl-C stops it)
	@echo "API: http://127.0.0.1:8080 (nginx; instances on 8081 and 8082, /metrics on each)"
	@echo "Redis: make run's own, with ACL users (AUDITLOG_REDIS_URL in .env; data in var/redis/)"
	@echo "Viewer: http://127.0.0.1:8080/viewer/ (sign in with a read key)"
	@echo "Flower: http://127.0.0.1:5555/flower/ and http://127.0.0.1:8080/flower/"
	@echo "  user auditlog, password: AUDITLOG_FLOWER_PASSWORD in .env"
	@echo "worker metrics: http://127.0.0.1:9101/metrics"
	@echo "Every /v1 request needs a key. First one (its token is printed last, once; honcho run"
	@echo "gives the command .env's passwords):"
	@echo "  $(BIN)/honcho run $(BIN)/auditlog keys create --name admin --scope admin"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:8080/v1/events"
	PATH="$(CURDIR)/$(BIN):$$PATH:/usr/sbin" $(BIN)/honcho start -f Procfile

test:  ## Set up, then run the whole suite against the real stack
	SKIP_DB_SETUP=1 bash scripts/setup.sh
	$(BIN)/pytest

bench:  ## Measure against the limits and a naive peer (~25-50 min); writes docs/benchmarks.md
	SKIP_DB_SETUP=1 bash scripts/setup.sh
	$(BIN)/pip install -q -e '.[serve,dev,bench]'
	command -v wrk >/dev/null && command -v hey >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk hey)
	$(BIN)/python bench/run.py

test-faults:  ## Only the fault-injection suite; rewrites its table in docs/faults.md
	SKIP_DB_SETUP=1 bash scripts/setup.sh
	FAULTS_REPORT=docs/faults.md $(BIN)/pytest tests/faults

screenshots:  ## The viewer's browser tests; they rewrite its screenshots in docs/
	SKIP_DB_SETUP=1 bash scripts/setup.sh
	VIEWER_SCREENSHOTS=docs $(BIN)/pytest tests/integration/test_viewer.py

test-unit:  ## Only the fast unit tests (no services needed)
	$(BIN)/pytest tests/unit

lint:  ## ruff (lint and format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt:  ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate:  ## Run the migrations against AUDITLOG_DATABASE_URL (with the passwords in .env)
	$(BIN)/honcho run $(BIN)/auditlog migrate --setup

clean:  ## Remove the virtualenv, the viewer's packages and build, and caches (the database stays)
	rm -rf $(VENV) viewer/node_modules viewer/dist .pytest_cache .ruff_cache .mypy_cache .hypothesis
