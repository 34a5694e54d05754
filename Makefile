# Two commands on a fresh machine (Python 3.11+):
#   make run    install into .venv and serve on SQLite (./keyhouse.db, created on first run)
#   make test   install into .venv, then lint, type-check and run the whole test suite
# Both install exactly what requirements/dev.lock pins (with hashes); `make lock` refreshes it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
LOCK := requirements/dev.lock
# The tool that writes the lock (installing from the lock needs pip alone).
UV := uv==0.13.9
UV_VENV ?= .venv-lock
# `make lock` moves every pin to the newest release pyproject.toml allows; `make lock UPGRADE=`
# keeps the pins and only resolves what pyproject.toml changed.
UPGRADE ?= --upgrade

.PHONY: install run test lint pytest schema settings-table bench lock

# A changed lock rebuilds the environment from scratch (--clear), so nothing it no longer names
# stays installed. Then keyhouse itself, without dependencies and built by the locked setuptools;
# `pip check` fails when pyproject.toml asks for something the lock does not hold.
$(BIN)/.installed: $(LOCK) pyproject.toml
	@echo "Installing keyhouse and its locked dependencies into $(VENV) (about a minute, once)..."
	$(PYTHON) -m venv $(if $(filter $(LOCK),$?),--clear) $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
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

# The README's configuration table, from the settings themselves.
settings-table: install
	$(BIN)/python -m app.settings_table README.md

lock:
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet "$(UV)"
	cp $(LOCK) $(UV_VENV)/dev.lock
	$(UV_VENV)/bin/uv pip compile pyproject.toml requirements/tools.in --extra dev \
		--universal --python-version 3.11 --generate-hashes $(UPGRADE) \
		--index-url https://pypi.org/simple --custom-compile-command "make lock" \
		--quiet -o $(UV_VENV)/dev.lock
	cmp -s $(UV_VENV)/dev.lock $(LOCK) || cp $(UV_VENV)/dev.lock $(LOCK)
	$(MAKE) test

bench: install
	$(BIN)/python benchmarks/verify.py
	$(BIN)/python benchmarks/graphql_keys.py
	$(BIN)/python benchmarks/isolation.py
