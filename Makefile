# The two commands a new user runs on a fresh Debian 12 machine:
#   make run    install what is missing, start the whole pipeline locally, send a few notifications
#   make test   install what is missing, start RabbitMQ and PostgreSQL, run lint, types and the suite
#   make test-slow   the tests that start services of their own for minutes (marker `cluster`:
#               a 3-node RabbitMQ cluster on loopback, one node killed under load); CI runs it too
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint services stop bench clean

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
	@python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

services: $(STAMP)
	scripts/services.sh up

run: services
	$(VENV)/bin/notifier stack up

stop:
	$(VENV)/bin/notifier stack down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: services lint
	$(VENV)/bin/pytest -q -ra -m "not cluster"

test-slow: services
	$(VENV)/bin/pytest -q -ra -m cluster

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
