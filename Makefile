# make demo: set up .venv, run the quick CPU demo (NAS-Bench-201 searches judged by the benchmark, one DARTS
# chain through retraining) and write its HTML report; make demo-all: every method at tiny scale;
# make test: set up and run the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Parallel jobs (the demo's jobs use one torch thread each).
CORES ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup demo demo-all test lint clean-results

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[workflow,dev]'
	touch $@

setup: $(VENV)/.installed

# DEMO_CONFIG: the overlay the demo runs (demo-all: config/demo-all.yaml).
DEMO_CONFIG ?= config/demo.yaml

demo: setup
	snakemake --cores $(CORES) --configfile $(DEMO_CONFIG)
	snakemake --configfile $(DEMO_CONFIG) --report results/report.html
	@echo "Results table: results/tables/cifar10.csv; table, pictures and plots: results/report.html"
	@pipeline show-table results/tables/cifar10.csv

demo-all:
	$(MAKE) demo DEMO_CONFIG=config/demo-all.yaml

test: setup
	pytest -q

lint: setup
	snakemake --lint --configfile config/demo.yaml
	snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results/data results/search results/select results/retrain results/latency results/tables results/report.html logs .snakemake
