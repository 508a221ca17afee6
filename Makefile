# Two commands do all set-up on a fresh machine:
#   make run    run the pipeline on the offline default (config/config.yaml)
#   make test   run the test suite
# Both create .venv once and reinstall only when pyproject.toml changes, so a second call is fast.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sharpgen-installed
CONFIG ?= config/config.yaml
CORES ?= all
# torch first, pinned, so pip takes the CPU build from this machine's disk instead of a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test lint dry-run clean-results help

help:
	@echo "make run      run the pipeline on $(CONFIG) (results under the config's results_dir)"
	@echo "make test     run the tests (unit + end-to-end workflow on config/test.yaml)"
	@echo "make lint     ruff + snakemake --lint"
	@echo "make dry-run  show the jobs snakemake would run"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete --show-failed-logs

dry-run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --dry-run

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint --configfile config/test.yaml
