# Local development and CI entry points. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful sync; it lives inside .venv so that deleting .venv re-syncs.
VENV_STAMP := $(VENV)/.synced-from-lock
DEB_PACKAGES := rabbitmq-server postgresql haproxy curl chromium
# sudo only when we are not root and it exists.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || command -v sudo)

.PHONY: help venv deps up down status test test-faults demo bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## create/update .venv from uv.lock (all extras)

# uv may come from pip (`python3 -m uv` works even when pip's bin folder is not on PATH).
# UV_PYTHON_DOWNLOADS=never: use the machine's Python 3.11, never fetch one.
$(VENV_STAMP): uv.lock pyproject.toml
	@if command -v uv >/dev/null; then uv=uv; else \
	  python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv; \
	  uv="python3 -m uv"; fi; \
	UV_PYTHON_DOWNLOADS=never $$uv sync --frozen --all-extras
	@touch $@

deps: ## Debian packages: RabbitMQ, PostgreSQL, HAProxy (Ray Serve), curl, Chromium (plot test)
	@missing=$$(for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -z "$$missing" ]; then echo "deps: $(DEB_PACKAGES) already installed"; else \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; fi

up: deps venv ## start RabbitMQ, MLflow and the API (supervisord, state in .state/)
	$(PY) scripts/stack.py up

down: ## stop the stack
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; fi

status: ## what runs and whether it answers
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py status; else echo "no .venv: run make venv"; fi

test: deps venv ## run the tests (they start their own services)
	$(PY) -m pytest -q

test-faults: deps venv ## the fault suite: outages and kills against real services (~10 min)
	$(PY) -m pytest -q -m faults tests/faults

demo: up ## end-to-end demo against the running stack
	$(PY) -m scripts.demo

bench: venv ## benchmark of the fit API
	$(PY) bench/fit_api.py

lint: venv ## ruff
	$(VENV)/bin/ruff check .

clean: down ## stop the stack and delete its state (.state/)
	rm -rf .state
