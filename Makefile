# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q
# torch and torchvision are pinned first: this pair installs from the local wheel cache on our machines.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test install dev lint typecheck unit screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(PIP) $(TORCH)
	touch $@

$(VENV)/.runtime: pyproject.toml constraints.txt $(VENV)/.torch
	$(PIP) -c constraints.txt -e .
	touch $@

$(VENV)/.dev: pyproject.toml constraints.txt $(VENV)/.runtime
	$(PIP) -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.runtime

dev: $(VENV)/.dev

## Start the web app on http://127.0.0.1:8000 with the embedded store under ./data
run: install
	$(BIN)/imagematch serve

lint: dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: dev
	$(BIN)/mypy

unit: dev
	$(BIN)/pytest

## Lint, type check and every test
test: lint typecheck unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
