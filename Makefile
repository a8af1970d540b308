# make demo   create .venv, install pinned dependencies, generate the demo data, run the workflow
# make test   install if needed, run the whole test suite
# make bench  run the demo and every stage against its target (benchmarks/RESULTS.md)
# make presets  run the small variant of each published system on the demo data (results/presets.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo/samples.tsv
CORES ?= all
# With an NVIDIA GPU, one GPU job at a time (networks, torch flows; the rules declare gpu=1).
GPU_JOBS := $(if $(shell command -v nvidia-smi 2>/dev/null),--resources gpu=1)

.PHONY: all install demo resume bench bench-gpu presets report-screenshot test clean
all: demo

install: $(STAMP)

$(STAMP): requirements.lock requirements-slurm.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-slurm.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(DEMO): vfer/demo.py | $(STAMP)
	$(BIN)/python -m vfer demo-data data/demo --seed 0

demo: $(STAMP) $(DEMO)
	$(BIN)/snakemake --cores $(CORES) $(GPU_JOBS)
	@$(MAKE) --no-print-directory results/report.html
	@echo
	@cat results/summary.md
	@echo
	@echo "Report: $(CURDIR)/results/report.html"

# After a crash or kill -9: remove the dead run's lock, redo the unfinished jobs, finish.
resume: $(STAMP) $(DEMO)
	$(BIN)/snakemake --unlock
	$(BIN)/snakemake --cores $(CORES) $(GPU_JOBS) --rerun-incomplete
	@$(MAKE) --no-print-directory results/report.html
	@cat results/summary.md

results/report.html: results/summary.md
	$(BIN)/snakemake --report $@

# A PNG of the report's first page (summary table and confusion matrix), by headless Chromium.
report-screenshot: results/report.html
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$(CURDIR)/.chromium --window-size=1400,1100 --virtual-time-budget=15000 \
	  --screenshot=$(CURDIR)/results/report.png file://$(CURDIR)/results/report.html
	@echo "Screenshot: $(CURDIR)/results/report.png"

# Every cost next to its target: benchmarks/RESULTS.md and benchmarks/results.csv.
bench: $(STAMP) $(DEMO)
	$(BIN)/python -m benchmarks.bench --cores 2

# The small variant of each published system on the demo data, the papers' rows beside vfer's
# figures: results/presets.md (SYSTEMS="rfscnn mffcnn" runs some of them).
presets: $(STAMP) $(DEMO)
	$(BIN)/python -m vfer.presets $(SYSTEMS) --cores 2

# The GPU figures of issue 16 beside their targets: benchmarks/GPU.md (on a machine without
# CUDA it says so, writes nothing and exits 0).
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.bench_gpu

# tests/test_conventions.py runs snakemake --lint and snakefmt --check among the tests; the
# slowest tests are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest --durations=15

clean:
	rm -rf results logs benchmarks/*/ .snakemake .chromium
