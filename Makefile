# The two commands: `make run` (the worker) and `make test`. Both set themselves up.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
PROCESSES ?= 2
THREADS   ?= 4

.PHONY: run test lint bench demo status recover services migrate venv clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

services: venv
	@$(PY) -m ops.services

migrate: venv
	$(PY) -m worker.storage migrate

run: services migrate
	$(VENV)/bin/dramatiq worker.actors --processes $(PROCESSES) --threads $(THREADS)

test: services migrate
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check worker ops tests bench testkit
	$(VENV)/bin/ruff format --check worker ops tests bench testkit
	$(VENV)/bin/mypy

bench: services
	$(PY) -m bench

demo: services
	$(PY) -m bench.demo

status: services
	@$(PY) -m ops status

recover: services
	@$(PY) -m ops recover

clean:
	rm -rf $(VENV) var build *.egg-info
