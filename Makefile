# The README's two commands are the contract: `make demo` and `make test`.
# Each creates .venv (with uv, installed by pip into the venv) and installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
SANDBOX_PORT ?= 8085
DEMO_DOSSIERS ?= 2000
DEMO_SEED ?= 42
BENCH_DOSSIERS ?= 100000
export CFA_PROJECT_DIR := $(CURDIR)

.PHONY: help venv venv-dev demo test test-system-pg bench up down replay pg-start pg-stop seed airflow-init sandbox clean \
	browser screenshots venv-celery up-celery down-celery check-celery replay-celery test-celery

help:
	@echo "make demo      the main job end to end on the embedded PostgreSQL and the OPCO sandbox"
	@echo "make test      the whole test suite"
	@echo "make bench     every benchmark, one 'metric: value' line per figure"
	@echo "make up/down   start/stop a long-running stack (PostgreSQL, sandbox, Airflow standalone)"
	@echo "make replay    with the stack up: reseed the ERPs, reset the sandbox and the connector, trigger a daily run"
	@echo "make browser   install the system Chromium the browser tests drive (apt, as root)"
	@echo "make screenshots  refresh docs/screenshots/ from the browser tests"
	@echo "make sandbox   serve the OPCO sandbox in the foreground (SANDBOX_PORT=$(SANDBOX_PORT))"
	@echo "make seed      reseed the demo ERPs (DEMO_SEED, DEMO_DOSSIERS)"
	@echo "make clean     stop everything and remove var/ (databases, reports, logs)"
	@echo "make up-celery / down-celery   CeleryExecutor stack on the system PostgreSQL and Redis/RabbitMQ"
	@echo "make replay-celery  with it up: reseed, reset the sandbox, trigger a daily run"
	@echo "make test-celery    the daily run and the chaos tests on the Celery stack"

$(VENV)/.installed: requirements.txt requirements-airflow.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip install --quiet --python $(PY) -r requirements-airflow.txt -r requirements.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(UV) pip install --quiet --python $(PY) -r requirements-airflow.txt -r requirements-dev.txt -e .
	@touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

demo: venv
	$(PY) -m cfa_opco.demo --seed $(DEMO_SEED) --dossiers $(DEMO_DOSSIERS) --sandbox-port $(SANDBOX_PORT)

test: venv-dev browser
	$(PY) -m pytest

# The browser tests (tests/ui) drive the system Chromium through Playwright's Python package
# (no browser download): apt packages chromium and chromium-driver.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "no $(CHROMIUM): install it with 'sudo apt-get install chromium chromium-driver' (the browser tests are skipped without it)"; \
	fi

screenshots: venv-dev browser
	CFA_UI_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/ui -q

bench: venv-dev
	$(PY) -m bench --dossiers $(BENCH_DOSSIERS)

pg-start: venv
	$(PY) -m cfa_opco.stack.embedded_pg start

pg-stop: venv
	$(PY) -m cfa_opco.stack.embedded_pg stop

seed: pg-start
	$(PY) -m cfa_opco.erp.generator --seed $(DEMO_SEED) --dossiers $(DEMO_DOSSIERS)

airflow-init: pg-start
	$(PY) -m cfa_opco.stack.airflow_env init

sandbox: venv
	$(PY) -m cfa_opco.sandbox --port $(SANDBOX_PORT)

up: venv
	$(PY) -m cfa_opco.stack.up start --sandbox-port $(SANDBOX_PORT)

down: venv
	$(PY) -m cfa_opco.stack.up stop

# Replay the demo under the scheduler of `make up`: same ERPs (DEMO_SEED, DEMO_DOSSIERS),
# a fresh sandbox state and connector database, then one cfa_opco_daily run to watch in the UI.
replay: venv
	$(PY) -m cfa_opco.stack.up replay --seed $(DEMO_SEED) --dossiers $(DEMO_DOSSIERS) --sandbox-port $(SANDBOX_PORT)

clean:
	-test -x $(PY) && $(PY) -m cfa_opco.stack.up stop
	-test -x $(PY) && $(CELERY_ENV) $(PY) -m cfa_opco.stack.celery_stack stop
	rm -rf var

# The integration tests again, against another PostgreSQL (this machine's 15 service when it
# runs): proves every DSN can point at an external server. Skipped, with the reason, when absent.
SYSTEM_PG_HOST ?= 127.0.0.1
SYSTEM_PG_PORT ?= 5432
SYSTEM_PG_TESTS ?= tests/test_extraction.py tests/erp tests/stack tests/test_e2e_daily.py
test-system-pg: venv-dev
	@if $(PY) -c "import psycopg2; psycopg2.connect(host='$(SYSTEM_PG_HOST)', port=$(SYSTEM_PG_PORT), user='postgres', dbname='postgres', connect_timeout=3).close()" 2>/dev/null; then \
		echo "== integration tests against the PostgreSQL at $(SYSTEM_PG_HOST):$(SYSTEM_PG_PORT) =="; \
		CFA_PG_EXTERNAL=1 CFA_PG_HOST=$(SYSTEM_PG_HOST) CFA_PG_PORT=$(SYSTEM_PG_PORT) CFA_VAR_DIR=$(CURDIR)/var/test-system-pg \
			$(PY) -m pytest -q $(wildcard $(SYSTEM_PG_TESTS)); \
	else \
		echo "SKIPPED: no PostgreSQL at $(SYSTEM_PG_HOST):$(SYSTEM_PG_PORT) (user postgres, trust auth); the suite ran on the embedded server only"; \
	fi

# ---- the CeleryExecutor stack (issue 13): the machine's PostgreSQL 15 (trust auth) for the
# metadata, connector and ERP databases (prefixed CELERY_DB_PREFIX), a broker (Redis, or
# RabbitMQ with CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//), the api-server,
# scheduler, dag-processor, triggerer and CELERY_WORKERS workers as separate processes
# (cfa_opco.stack.celery_stack). Its files live in CELERY_VAR_DIR, each worker in its own folder.
CELERY_API_PORT ?= 8090
CELERY_SANDBOX_PORT ?= 8095
CELERY_PG_HOST ?= 127.0.0.1
CELERY_PG_PORT ?= 5432
CELERY_DB_PREFIX ?= cfa_celery_
CELERY_BROKER_URL ?= redis://127.0.0.1:6379/0
CELERY_RESULT_BACKEND ?= db+postgresql://postgres@$(CELERY_PG_HOST):$(CELERY_PG_PORT)/$(CELERY_DB_PREFIX)airflow
CELERY_VAR_DIR ?= $(CURDIR)/var/celery
CELERY_WORKERS ?= 2
CELERY_CONCURRENCY ?= 4
CELERY_FAULT_PRESET ?=
CELERY_ENV = CFA_PG_HOST=$(CELERY_PG_HOST) CFA_PG_PORT=$(CELERY_PG_PORT) CFA_DB_PREFIX=$(CELERY_DB_PREFIX) \
	CFA_VAR_DIR=$(CELERY_VAR_DIR) CFA_CELERY_API_PORT=$(CELERY_API_PORT) CFA_CELERY_SANDBOX_PORT=$(CELERY_SANDBOX_PORT) \
	CFA_CELERY_BROKER_URL='$(CELERY_BROKER_URL)' CFA_CELERY_RESULT_BACKEND='$(CELERY_RESULT_BACKEND)' \
	CFA_CELERY_WORKERS=$(CELERY_WORKERS) CFA_CELERY_CONCURRENCY=$(CELERY_CONCURRENCY) \
	CFA_CELERY_FAULT_PRESET=$(CELERY_FAULT_PRESET)

$(VENV)/.installed-celery: $(VENV)/.installed requirements-celery.txt
	$(UV) pip install --quiet --python $(PY) -r requirements-airflow.txt -r requirements.txt -r requirements-celery.txt -e .
	@touch $@

venv-celery: $(VENV)/.installed-celery

check-celery: venv-celery
	@$(CELERY_ENV) $(PY) -m cfa_opco.stack.celery_stack check

up-celery: venv-celery
	$(CELERY_ENV) $(PY) -m cfa_opco.stack.up start --executor celery

down-celery: venv-celery
	$(CELERY_ENV) $(PY) -m cfa_opco.stack.up stop --executor celery

replay-celery: venv-celery
	$(CELERY_ENV) $(PY) -m cfa_opco.stack.celery_stack replay --seed $(DEMO_SEED) --dossiers $(DEMO_DOSSIERS)

# The daily run on the Celery stack compared with the embedded run, then the chaos tests
# (tests/stack/test_celery_*.py; ~10 min each on 2 cores). The test stack uses its own ports,
# databases (cfa_celery_test_*) and Redis database.
test-celery: venv-dev venv-celery
	CFA_CELERY_STACK=1 CELERY_PG_HOST=$(CELERY_PG_HOST) CELERY_PG_PORT=$(CELERY_PG_PORT) \
		$(PY) -m pytest -q tests/stack/test_celery_stack.py tests/stack/test_celery_chaos.py
