# Two commands for a fresh machine with Python 3.11:
#   make run    install (into .venv) and run the whole pipeline on config/config.yaml
#   make test   install and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
CONFIG ?= config/config.yaml
export PATH := $(abspath $(BIN)):$(PATH)
# PySCF/OpenMP/BLAS threads: Snakemake's `threads:` decides parallelism, not the libraries.
export OMP_NUM_THREADS ?= 1

.PHONY: install run test lint report dryrun clean docs

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: install
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete --printshellcmds
	@echo
	@echo "Ranked candidates: results/screen/ranked.parquet (top rows: results/screen/top.csv)"
	@echo "Next to label:     results/screen/next_to_label.parquet"
	@echo "Rounds:            results/rounds.parquet (active learning; earlier rounds under results/rounds/)"
	@echo "Report:            results/report/summary.md  (HTML: make report)"

# Two pytest workers, whole test files each (module fixtures run once); the shared tiny workflow
# run is made once for both (tests/workflow_utils.py: baseline_run).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

dryrun: install
	$(BIN)/snakemake -n --configfile $(CONFIG)

docs: install
	$(BIN)/matscreen tables --update-readme README.md

# ruff (lint + format check; pyproject.toml lists the files not yet formatted), snakefmt, Snakemake's own linter
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow
	$(BIN)/snakemake --lint

report: install
	$(BIN)/snakemake --configfile $(CONFIG) --report results/report/report.html
	@echo "Report: results/report/report.html"

clean:
	rm -rf results logs .snakemake
