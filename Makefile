# The one entry point. `make` = set up, check the data, run the whole pipeline (cpu profile), build the book.
# `make test` = what CI runs (.ci/run): set up, smoke pipeline, book build, then the test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
BOOK_ROOT ?= .
# The offline data mirror beside the checkout when there is one; otherwise files are downloaded and verified.
KDLIB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export KDLIB_DATA_DIR
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: all setup chromium data-check pipeline book readme bench lint format test pytest smoke clean release

all: setup data-check pipeline book
	@echo "The book: $(abspath $(BOOK_ROOT))/_build/html/index.html"

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt book-constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c book-constraints.txt
	$(PY) -m pip uninstall --quiet --yes kdlib 2>/dev/null || true   # the distribution's name before it was kdlib-romanian-distil
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (kdlib)"
	touch $@

# Headless Chromium for the book test (Debian package; needs root, as on this project's machines).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

data-check: setup
	$(PY) -m kdlib data --check

# The notebooks of a profile, executed with papermill into $(RUN_DIR); finished steps are skipped on a rerun.
pipeline: setup
	$(PY) -m kdlib run --profile $(PROFILE) --out $(RUN_DIR)

# The book from the executed notebooks of $(RUN_DIR) (no re-execution, warnings are errors).
book: setup
	$(PY) -m kdlib run --profile $(PROFILE) --out $(RUN_DIR) --book-only --book-root $(BOOK_ROOT)

# The README's headline (scores, claims, cost, date and machine) from a complete run of $(RUN_DIR)
readme: setup
	$(PY) -m kdlib readme --run $(RUN_DIR)

bench: setup
	$(PY) -m kdlib bench --out runs/bench $(if $(QUICK),--quick,)

smoke: setup
	$(MAKE) pipeline book PROFILE=smoke BOOK_ROOT=_build/smoke

pytest: setup
	KDLIB_RUN_DIR=runs/smoke KDLIB_BOOK_DIR=_build/smoke/_build/html $(PY) -m pytest tests

# ruff: the formatter's check and a small rule set (pyproject.toml [tool.ruff]); `make format` applies both
lint: setup
	$(VENV)/bin/ruff format --check kdlib tests
	$(VENV)/bin/ruff check kdlib tests notebooks

format: setup
	$(VENV)/bin/ruff format kdlib tests
	$(VENV)/bin/ruff check --fix kdlib tests notebooks

test: setup lint chromium smoke pytest

# Tag v<kdlib.__version__> on a clean tree whose install cells, launch button and docs agree; an existing tag
# must name HEAD (else bump kdlib.__version__). Push the tag yourself: the Colab install cells pin it.
release: setup
	@V=$$($(PY) -c 'import kdlib; print(kdlib.__version__)'); \
	test -z "$$(git status --porcelain)" || { echo "release: uncommitted changes"; exit 1; }; \
	$(PY) -m pytest -q tests/test_notebook.py -k "one_source or declared or install_cell or cells_agree" || exit 1; \
	if git rev-parse -q --verify "refs/tags/v$$V" >/dev/null; then \
	  test "$$(git rev-parse "v$$V^{commit}")" = "$$(git rev-parse HEAD)" || { echo "release: v$$V tags another commit: bump kdlib.__version__"; exit 1; }; \
	else git tag -a "v$$V" -m "kdlib $$V"; fi; \
	echo "tagged v$$V; publish it with: git push origin v$$V"

clean:
	rm -rf _build runs .pytest_cache
