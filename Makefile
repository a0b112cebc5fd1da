# The one entry point. `make` = set up, check the data, run the whole pipeline (cpu profile), build the book.
# `make test` = what CI runs (.ci/run): set up, smoke pipeline, book build, then the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
BOOK_DIR ?= _build/html
KDLIB_DATA_DIR ?= $(abspath ../shared/data)
export KDLIB_DATA_DIR
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: all setup chromium data-check pipeline book bench test pytest clean

all: setup data-check pipeline book
	@echo "The book: $(abspath $(BOOK_DIR))/index.html"

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (kdlib)"
	touch $@

# Headless Chromium for the book test (Debian package; needs root, as on this project's machines).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

data-check: setup
	$(PY) -m kdlib data --check

pipeline: setup
	$(PY) -m kdlib run --profile $(PROFILE) --out $(RUN_DIR)

bench: setup
	$(PY) -m kdlib bench --out $(RUN_DIR)/bench

book: setup
	@echo "book target: to be wired to the runner"

pytest: setup
	$(PY) -m pytest tests

test: setup chromium
	$(MAKE) pipeline PROFILE=smoke
	$(MAKE) book PROFILE=smoke
	$(MAKE) pytest

clean:
	rm -rf _build runs .pytest_cache
