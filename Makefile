# make demo: set up .venv and run the CPU demo chain; make test: set up and run the tests.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
CORES ?= 2

.PHONY: setup demo test lint clean-results

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[workflow,dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	snakemake results/tables/cifar10.csv --cores $(CORES) --configfile config/demo.yaml
	@echo "Results table: results/tables/cifar10.csv"
	@cat results/tables/cifar10.csv

test: setup
	pytest -q

lint: setup
	snakemake --lint --configfile config/demo.yaml
	snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results/data results/search results/select results/retrain results/latency results/tables logs .snakemake
