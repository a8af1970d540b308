# make demo   create .venv, install pinned dependencies, generate the demo data, run the workflow
# make test   install if needed, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo/samples.tsv
CORES ?= all

.PHONY: all install demo test clean
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
	$(BIN)/snakemake --cores $(CORES)
	@echo
	@cat results/summary.md

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf results logs benchmarks/*/ .snakemake
