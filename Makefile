# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch: an unpinned `torch` would pull a multi-gigabyte CUDA build.
# A GPU user overrides it, e.g. `make run TORCH_SPEC=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP_TORCH_FLAGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: re-install only when pyproject.toml or the torch pin changes.
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PIP_TORCH_FLAGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/python -m service serve

# Test files run on TEST_PROCESSES processes (pytest-xdist), each file's tests on one of them, so
# a file's shared service starts once. Two halves the suite's time on a 2-core machine.
TEST_PROCESSES ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile --cov --cov-report=term

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check service tests examples migrations bench
	$(BIN)/ruff format --check service tests examples migrations bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data .pytest_cache
