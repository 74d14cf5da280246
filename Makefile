# make demo: set up .venv, run the CPU demo chain and write its HTML report; make test: set up and run the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Parallel jobs (the demo's jobs use one torch thread each).
CORES ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup demo test lint clean-results

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[workflow,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	snakemake --cores $(CORES) --configfile config/demo.yaml
	snakemake --configfile config/demo.yaml --report results/report.html
	@echo "Results table: results/tables/cifar10.csv; pictures, plots and table: results/report.html"
	@pipeline show-table results/tables/cifar10.csv

test: setup
	pytest -q

lint: setup
	snakemake --lint --configfile config/demo.yaml
	snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results/data results/search results/select results/retrain results/latency results/tables results/report.html logs .snakemake
