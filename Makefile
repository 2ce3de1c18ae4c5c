# One entry point for developers and CI. Needs only python3 (and make) on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
MLFLOW_UI_STAMP := $(VENV)/.installed-mlflow-ui
# --no-compile: no .pyc for the many modules the demo never imports (Python compiles what it uses).
PIP := $(BIN)/python -m pip install --quiet --no-compile

.PHONY: setup setup-demo demo test ui mlflow lint bench clean

# What the demo needs and nothing more: the runtime dependencies.
setup-demo: $(DEMO_STAMP)

# Everything: the demo's set-up plus the test tooling and the SageMaker SDK.
setup: $(STAMP)

# torch is pinned to 2.13.0 and installed first: on the project's machines pip takes the CPU wheel
# that lies on disk; a plain `torch` (or a range) would pull a multi-GB CUDA build.
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $(DEMO_STAMP)

$(STAMP): $(DEMO_STAMP)
	$(PIP) -e '.[dev,sagemaker]'
	touch $(STAMP)

demo: setup-demo
	$(BIN)/python -m crpbot_assets.main

test: setup
	$(BIN)/python -m pytest

ui: setup-demo
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -h 127.0.0.1 -p 3000

# The MLflow UI over the embedded store (<storage root>/mlflow/) on 127.0.0.1:5000; the UI and
# its server are the `mlflow-ui` extra, installed on first use (the demo set-up tracks without it).
mlflow: $(MLFLOW_UI_STAMP)
	$(BIN)/python -m crpbot_assets.tracking --port 5000

$(MLFLOW_UI_STAMP): $(DEMO_STAMP)
	$(PIP) -e '.[mlflow-ui]'
	touch $(MLFLOW_UI_STAMP)

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
