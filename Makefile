# One entry point for developers and CI. Needs only python3 (and make) on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
MLFLOW_UI_STAMP := $(VENV)/.installed-mlflow-ui
# --no-compile: no .pyc for the 22,000 modules in the venv; the test commands write the .pyc of
# what the suite imports (WRITE_BYTECODE).
PIP := $(BIN)/python -m pip install --quiet --no-compile
# The lock files (requirements/*.lock) pin every package with its hashes; `make lock` writes them.
LOCKED := $(PIP) --require-hashes -r
# torch is pinned to 2.13.0 and installed first, outside the lock: on the project's machines pip
# takes the CPU wheel that lies on disk (uv does not see it); a plain `torch` (or a range) would
# pull a multi-GB CUDA build. Everything else comes from a lock, so a new release on the registry
# changes nothing here; the project itself is installed without dependencies and without build
# isolation (setuptools is in the locks).
VENV_WITH_TORCH := $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet pip==26.3 \
	&& $(PIP) torch==2.13.0
INSTALL_PROJECT := $(PIP) --no-deps --no-build-isolation -e .
# The test set-up installs its lock with uv: the same wheels, checked against the same hashes, in
# parallel (dev.lock in about 4 s with an empty cache, where pip took 23-30 s: bench/setup.py).
UV_VERSION := 0.13.8
UV_LOCKED := $(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes -r
# This machine's shells set PYTHONDONTWRITEBYTECODE=1, so every process compiled each module it
# imported again, and the suite's hundreds of processes did (`import mlflow` 2.6 vs 1.6 CPU s,
# the Dagster definitions' 4.7 vs 3.6). Without it the first process to import a module writes
# its .pyc (atomically: concurrent writers are safe) and the others read it. The suite's main
# imports compile in 8-10 CPU s, against 64-66 for the whole venv (bench/setup.py).
WRITE_BYTECODE := env -u PYTHONDONTWRITEBYTECODE
LOCK_TOOLS := .venv-lock
PIP_COMPILE := $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links

.PHONY: setup setup-demo demo test test-fast ui mlflow lint bench clean lock

# What the demo needs and nothing more: the runtime dependencies.
setup-demo: $(DEMO_STAMP)

# Everything: the demo's set-up plus the test tooling, the SageMaker SDK and the PostgreSQL
# storage of the production instance (the `postgres` extra).
setup: $(STAMP)

$(DEMO_STAMP): pyproject.toml requirements/demo.lock
	$(VENV_WITH_TORCH)
	$(LOCKED) requirements/demo.lock
	$(INSTALL_PROJECT)
	touch $(DEMO_STAMP)

# dev.lock holds demo.lock's pins and more, so this venv is the demo's too. The demo's set-up keeps
# pip: uv's 39 MB would take its venv past the 1.6 GB budget (docs/performance.md).
$(STAMP): pyproject.toml requirements/demo.lock requirements/dev.lock
	$(VENV_WITH_TORCH)
	$(PIP) uv==$(UV_VERSION)
	$(UV_LOCKED) requirements/dev.lock
	$(INSTALL_PROJECT)
	touch $(DEMO_STAMP) $(STAMP)

# Resolve pyproject.toml's dependencies into the locks (pins already there are kept while they
# still fit; `make lock LOCK_FLAGS=--upgrade` moves everything to the newest releases), then derive
# v8_model/job/requirements.txt from dev.lock. Commit them together. demo.lock and mlflow-ui.lock
# are resolved under dev.lock's pins, so the locks agree on every shared package.
LOCK_FLAGS ?=
lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/python -m pip install --quiet pip==26.3 pip-tools==7.6.2
	$(PIP_COMPILE) $(LOCK_FLAGS) --extra dev --extra sagemaker --extra postgres \
		-o requirements/dev.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) -c requirements/dev.lock -o requirements/demo.lock pyproject.toml
	$(PIP_COMPILE) $(LOCK_FLAGS) --extra mlflow-ui -c requirements/dev.lock \
		-o requirements/mlflow-ui.lock pyproject.toml
	$(PYTHON) requirements/pins.py

demo: setup-demo
	$(BIN)/python -m crpbot_assets.main

# pytest-xdist workers: one per core, and at least 3, because much of the suite waits on servers
# and subprocesses and a third worker keeps 2 cores busy. A test file stays on one worker, so its
# module-wide trained scenario runs once. The files go out in the order tests/conftest.py gives.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(max(3, os.cpu_count() or 1))')
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: setup
	$(WRITE_BYTECODE) $(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The inner loop: no servers, no browser, no end-to-end runs (markers in tests/conftest.py).
test-fast: setup
	$(WRITE_BYTECODE) $(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow and not integration"

ui: setup-demo
	DAGSTER_HOME=$(CURDIR)/.dagster_home $(BIN)/dagster dev -h 127.0.0.1 -p 3000

# The MLflow UI over the embedded store (<storage root>/mlflow/) on 127.0.0.1:5000; the UI and
# its server are the `mlflow-ui` extra, installed on first use (the demo set-up tracks without it).
mlflow: $(MLFLOW_UI_STAMP)
	$(BIN)/python -m crpbot_assets.tracking --port 5000

$(MLFLOW_UI_STAMP): $(DEMO_STAMP) requirements/mlflow-ui.lock
	$(LOCKED) requirements/mlflow-ui.lock
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
	rm -rf $(VENV) $(LOCK_TOOLS) var
	find .dagster_home -mindepth 1 -maxdepth 1 ! -name dagster.yaml -exec rm -rf {} +
