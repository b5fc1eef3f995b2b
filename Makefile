# Two commands for a newcomer (see README):
#   make demo   set up .venv and run the kit's main job headless (notebooks -> runs/)
#   make test   set up .venv and run the test suite
# Everything installs into ./.venv; re-running skips the install until pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.aad-kit-installed
PROFILE ?= quick
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Exact pin: on CPU-only machines with a local wheel this is the CPU build; see README for GPU.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/python -m ipykernel install --sys-prefix --name aad-kit --display-name "aad-kit (.venv)" >/dev/null
	touch $(STAMP)

demo: setup
	$(BIN)/aad-kit run --profile $(PROFILE)

test: setup
	OMP_NUM_THREADS=1 AAD_KIT_TORCH_THREADS=1 $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check aad_kit tests

clean-venv:
	rm -rf $(VENV)
