# Two commands on a fresh machine (Python 3.11+):
#   make run    install into .venv and serve on SQLite (./keyhouse.db, created on first run)
#   make test   install into .venv, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint pytest schema bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/keyhouse serve --host $(HOST) --port $(PORT)

test: install lint pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

schema: install
	$(BIN)/keyhouse export-schema --output schema.graphql

bench: install
	$(BIN)/python benchmarks/verify.py
	$(BIN)/python benchmarks/graphql_keys.py
	$(BIN)/python benchmarks/isolation.py
