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
BENCH_PROFILES ?= smoke
BENCH_STAMP := $(VENV)/.aad-kit-bench-installed

.PHONY: setup demo test test-browser lint bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Exact pin: on CPU-only machines with a local wheel this is the CPU build; see README for GPU.
	$(BIN)/pip install --quiet torch==2.13.0
	# llama.cpp compiles for this CPU (a few minutes, once); no cached wheel from another machine
	$(BIN)/pip install --quiet --no-cache-dir llama-cpp-python==0.3.36
	$(BIN)/pip install --quiet -e ".[all]"
	$(BIN)/python -c "from aad_kit.pipeline import ensure_kernel; ensure_kernel()"
	touch $(STAMP)

demo: setup
	$(BIN)/aad-kit run --profile $(PROFILE)

test: setup
	OMP_NUM_THREADS=1 AAD_KIT_TORCH_THREADS=1 $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# JupyterLab on 127.0.0.1 in headless Chromium: the widgets render and answer clicks, the
# example run's report renders offline (tests/test_browser.py; a minute or two).
test-browser: setup
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ echo "make test-browser needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"; exit 1; }
	AAD_KIT_BROWSER=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m browser tests/test_browser.py $(PYTEST_ARGS)

# The benchmarks of benchmarks/RESULTS.md, one after the other (they time things: leave the
# machine otherwise idle). `make bench BENCH_PROFILES="smoke quick"` also times the quick profile.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[all,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/eval_per_setting.py
	$(BIN)/python benchmarks/eval_executors.py
	$(BIN)/python benchmarks/sampling_engines.py
	$(BIN)/python benchmarks/dpo_step.py
	$(BIN)/python benchmarks/pipeline_stages.py $(foreach p,$(BENCH_PROFILES),--run $(p))

lint: setup
	$(BIN)/ruff check aad_kit tests

clean-venv:
	rm -rf $(VENV)
