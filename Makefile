# One entry point for developers and CI. Needs only python3 (and make) on the machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
MLFLOW_UI_STAMP := $(VENV)/.installed-mlflow-ui
# --no-compile: no .pyc for the many modules the demo never imports (Python compiles what it uses).
PIP := $(BIN)/python -m pip install --quiet --no-compile
# The lock files (requirements/*.lock) pin every package with its hashes; `make lock` writes them.
LOCKED := $(PIP) --require-hashes -r
LOCK_TOOLS := .venv-lock
PIP_COMPILE := $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links

.PHONY: setup setup-demo demo test test-fast ui mlflow lint bench clean lock

# What the demo needs and nothing more: the runtime dependencies.
setup-demo: $(DEMO_STAMP)

# Everything: the demo's set-up plus the test tooling, the SageMaker SDK and the PostgreSQL
# storage of the production instance (the `postgres` extra).
setup: $(STAMP)

# torch is pinned to 2.13.0 and installed first, outside the lock: on the project's machines pip
# takes the CPU wheel that lies on disk; a plain `torch` (or a range) would pull a multi-GB CUDA
# build. Everything else comes from the lock, so a new release on the registry changes nothing
# here; the project itself is installed without dependencies and without build isolation
# (setuptools is in the lock).
$(DEMO_STAMP): pyproject.toml requirements/demo.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(PIP) torch==2.13.0
	$(LOCKED) requirements/demo.lock
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(DEMO_STAMP)

# Then the venv's bytecode, as pip compiles by default (the demo's set-up skips it for its disk
# budget): under PYTHONDONTWRITEBYTECODE, which this machine's shells set, Python never writes it,
# and each of the suite's hundreds of processes compiled what it imported again (MLflow's import
# 2.6 vs 1.6 CPU s, the Dagster definitions' 4.7 vs 3.6). A file written for a newer Python
# (torch ships one for 3.12) does not compile and is never imported: as pip does, carry on.
$(STAMP): $(DEMO_STAMP) requirements/dev.lock
	$(LOCKED) requirements/dev.lock
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
	touch $(STAMP)

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

# The project's own bytecode first, for the same reason (only what changed is compiled again).
COMPILE_SOURCES := $(BIN)/python -m compileall -q crpbot_assets v8_model tests >/dev/null

test: setup
	$(COMPILE_SOURCES)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The inner loop: no servers, no browser, no end-to-end runs (markers in tests/conftest.py).
test-fast: setup
	$(COMPILE_SOURCES)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow and not integration"

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
