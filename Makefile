# Every target a newcomer or CI needs; `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint demo sandbox bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev tools

lint: $(STAMP) ## ruff and mypy (strict) on the package
	$(BIN)/ruff check importer tests bench docs/examples
	$(BIN)/mypy

test: lint ## lint, then the whole test suite (what CI runs)
	$(BIN)/pytest -q

test-fast: $(STAMP) ## the test suite without tests marked slow
	$(BIN)/pytest -q -m "not slow"

demo: $(STAMP) ## import sample_data/ into an in-process sandbox and show the report
	$(BIN)/python -m importer.demo

sandbox: $(STAMP) ## serve the local sandbox API on 127.0.0.1:8790
	$(BIN)/instasent-import sandbox --host 127.0.0.1 --port 8790

bench: $(STAMP) ## run the benchmarks under bench/ (minutes; not part of make test)
	$(BIN)/python -m bench

clean: ## remove the venv, caches and generated benchmark data
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench/data .instasent-import
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
