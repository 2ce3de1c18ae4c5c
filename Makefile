# One entry point for developers and CI. Needs only python3 (and make) on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test ui lint bench clean

setup: $(STAMP)

# torch is pinned to 2.13.0 and installed first: on the project's machines pip takes the CPU wheel
# that lies on disk; a plain `torch` (or a range) would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,sagemaker]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m crpbot_assets.main

test: setup
	$(BIN)/python -m pytest

ui: setup
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -h 127.0.0.1 -p 3000

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/synthetic.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/train_cpu.py

# .dagster_home/dagster.yaml is the repo's instance settings: everything else there is runs.
clean:
	rm -rf $(VENV) var
	find .dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +
