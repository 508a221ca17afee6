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
# The HTML report of `make run`/`make report`: results/report.html for a run whose results_dir is results/default
# (config/config.yaml: the path the README and issue name), else <results_dir>/report.html, so two configs'
# reports never overwrite each other. REPORT=path overrides it.
REPORT ?=
REPORT_PATH_PY := import sys, yaml; c = [yaml.safe_load(open(p)) or {} for p in ("config/config.yaml", sys.argv[1])]; \
	d = (c[1].get("results_dir") or c[0].get("results_dir") or "results/default").rstrip("/"); \
	print("results/report.html" if d == "results/default" else d + "/report.html")

.PHONY: run report test lint dry-run clean-results help

help:
	@echo "make run      run the pipeline on $(CONFIG) (results under the config's results_dir), then make report"
	@echo "make report   HTML report of a finished run: every figure with its caption, run times"
	@echo "              (results/report.html for config/config.yaml, else <results_dir>/report.html; REPORT=path)"
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
	@$(MAKE) --no-print-directory report

report: $(STAMP)
	@report="$(REPORT)"; [ -n "$$report" ] || report=$$($(BIN)/python -c '$(REPORT_PATH_PY)' $(CONFIG)) || exit 1; \
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report "$$report" && echo "sharpgen: report in $$report"

dry-run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --dry-run

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakemake --lint --configfile config/test.yaml
