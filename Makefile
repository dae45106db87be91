# amtrace: the two set-up commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test deps venv stop bench clean screenshots

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "amtrace: $(PYTHON) not found; install Python 3.11+ (Debian: apt-get install python3 python3-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

deps:
	deploy/local/install-deps.sh

## make demo: the whole stack on this machine (broker, InfluxDB, simulated machines, agent, server)
demo: deps venv
	$(PY) deploy/local/stack.py up

## make stop: stop what make demo started
stop:
	$(PY) deploy/local/stack.py down

## make test: the whole test suite against real services on free loopback ports
test: deps venv
	deploy/local/run-tests.sh

## make screenshots: refresh docs/screenshots from the page tests (make test writes them under var/ only)
screenshots: deps venv
	AMTRACE_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/server/ui -k "not schemathesis"

bench: deps venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
