# Two commands on a fresh machine: `make run` and `make test`. Both build .venv when needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test lint format venv models bench clean-venv

venv: $(STAMP)

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Waypost needs Python >= 3.11 (found " + sys.version.split()[0] + ")")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/waypost run

# ruff (lint, and the format check), mypy, and the import contract (web -> sync -> appliance ->
# recognizer; pyproject.toml). `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Rebuild the shipped TFLite models (hours on a 2-core machine; uses its own TensorFlow venv).
models:
	bash recognizer/training/build.sh ocr
	bash recognizer/training/build.sh det

bench: $(STAMP)
	$(BIN)/waypost bench store
	$(BIN)/waypost bench audit

clean-venv:
	rm -rf $(VENV)
