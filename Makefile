# make demo: set up .venv, run the quick CPU demo (NAS-Bench-201 searches judged by the benchmark, one DARTS
# chain through retraining) and write its HTML report; make demo-all: every method at tiny scale;
# make test: set up and run every test (what CI runs); make test-fast: the tests not marked slow.
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Parallel jobs (the demo's jobs use one torch thread each).
CORES ?= $(shell nproc 2>/dev/null || echo 2)
# GPU generations (README, "GPU generations"). TORCH_INDEX_URL: where torch and torchvision
# come from (empty: the default index, whose build is CUDA 13: sm_75 and newer, no V100).
# GPU_MODEL: the cluster's GPU (config cluster.gpu.gpu_model, e.g. v100); set-up then fails
# in one line unless the installed torch has kernels for it. E.g. for V100 nodes:
#   make setup GPU_MODEL=v100 TORCH_INDEX_URL=<a CUDA 12.6 torch index, see README>
TORCH_INDEX_URL ?=
GPU_MODEL ?=
CONFIG ?= config/config.yaml
# Setting or changing TORCH_INDEX_URL reinstalls torch (the stamp holds the index it came
# from; a new stamp for the default index is dated 1970 so it reinstalls nothing). Back to
# the default build: remove the venv.
TORCH_STAMP := $(VENV)/.torch-index
$(shell mkdir -p $(VENV) && if [ ! -e $(TORCH_STAMP) ] && [ -z '$(TORCH_INDEX_URL)' ]; then \
	echo > $(TORCH_STAMP) && touch -d @0 $(TORCH_STAMP); \
	elif ! echo '$(TORCH_INDEX_URL)' | cmp -s - $(TORCH_STAMP); then echo '$(TORCH_INDEX_URL)' > $(TORCH_STAMP); fi)

.PHONY: setup demo demo-all test test-fast lint clean-results check-gpu

$(VENV)/.installed: pyproject.toml constraints.txt $(TORCH_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH_INDEX_URL),$(BIN)/python -m pip install -q --disable-pip-version-check --force-reinstall \
		--index-url '$(TORCH_INDEX_URL)' -c constraints.txt torch torchvision)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[workflow,dev]'
	touch $@

setup: $(VENV)/.installed
	$(if $(GPU_MODEL),$(BIN)/pipeline check-gpu --gpu-model '$(GPU_MODEL)')

# Whether the installed torch can run the config's cluster.gpu.gpu_model (no GPU needed).
check-gpu: $(VENV)/.installed
	$(BIN)/pipeline check-gpu --config $(CONFIG)

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

# The everyday lane (README, "Tests"): unit and contract tests, no end-to-end or subprocess resume runs.
test-fast: setup
	pytest -q -m "not slow"

# ruff's rules: pyproject.toml [tool.ruff.lint]. All three must pass before a merge.
lint: setup
	ruff check src tests bench scripts
	snakefmt --check Snakefile workflow/rules
	snakemake --lint --configfile config/demo.yaml

clean-results:
	rm -rf results/data results/search results/select results/retrain results/latency results/tables results/report.html logs .snakemake
