# Two commands on a fresh machine:
#   make demo   - embedded broker + worker + simulated traffic, alerts live (no Kafka, no Docker)
#   make test   - the whole suite (unit + integration on the embedded broker)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP_RUN  := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test lint format install clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "stream-monitor needs Python >= 3.11 (river 0.26 does); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[worker]'
	@touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[worker,test]'
	@touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/stream-monitor demo

lint: $(STAMP_TEST)
	$(BIN)/ruff check stream tests bench
	$(BIN)/ruff format --check stream tests bench

test: lint
	$(BIN)/python -m pytest

format: $(STAMP_TEST)
	$(BIN)/ruff check --fix stream tests bench
	$(BIN)/ruff format stream tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
