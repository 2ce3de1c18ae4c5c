"""The warm trainer server (`crpbot_assets.warm_trainer`): the same training as a fresh
`python -m v8_model.job.train`, with the same exit codes and lifetimes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import gone_within, processes_working_in, training_container

from crpbot_assets import warm_trainer
from crpbot_assets.trainers import LocalTrainer
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.job.lifetime import PARENT_PID_ENV_VAR

HYPERPARAMETERS = {"epochs": "2", "batch-size": "512", "symbols": '"ETH"', "folds": "2"}
TIMEOUT = 300


@pytest.fixture(scope="module")
def warm_trainer_server():
    """A server of this module's own, advertised to nothing else."""
    server, socket_path = warm_trainer.start_server(os.getpid())
    yield socket_path
    warm_trainer.stop_server(server)


@pytest.fixture(scope="module")
def datasets():
    return {"ETH": build_features_dataset(generate_candles("ETH", minutes=12 * 1440, seed=8))}


def _container(root: Path, datasets, hyperparameters=HYPERPARAMETERS) -> dict:
    env = training_container(root, datasets, hyperparameters)
    env["OMP_NUM_THREADS"] = "1"  # the same threads both ways: the same arithmetic
    env[PARENT_PID_ENV_VAR] = str(os.getpid())  # as LocalTrainer passes it
    return env


def _train(command: list[str], env: dict, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *command],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _warm(env: dict, socket_path: str) -> dict:
    return {**env, warm_trainer.WARM_TRAINER_ENV_VAR: socket_path}


def test_a_warm_training_is_the_fresh_one(tmp_path, datasets, warm_trainer_server):
    fresh_root, warm_root = tmp_path / "fresh", tmp_path / "warm"
    fresh_env = _container(fresh_root, datasets)
    fresh_env.pop(warm_trainer.WARM_TRAINER_ENV_VAR, None)
    fresh = _train(["-m", "v8_model.job.train"], fresh_env, fresh_root)
    warm_env = _warm(_container(warm_root, datasets), warm_trainer_server)
    warm = _train(["-m", "crpbot_assets.warm_trainer"], warm_env, warm_root)

    assert fresh.returncode == 0, fresh.stderr
    assert warm.returncode == 0, warm.stderr
    # Every epoch line, fold line and figure the entry point printed, in the same order.
    assert warm.stdout == fresh.stdout and "epoch=2" in warm.stdout
    for name in ("metrics.json", "config.json"):
        fresh_record = json.loads((fresh_root / "model" / "ETH" / name).read_text())
        warm_record = json.loads((warm_root / "model" / "ETH" / name).read_text())
        fresh_record.pop("train_seconds", None), warm_record.pop("train_seconds", None)
        assert warm_record == fresh_record, name
    with (
        np.load(fresh_root / "model" / "ETH" / "weights.npz") as fresh_weights,
        np.load(warm_root / "model" / "ETH" / "weights.npz") as warm_weights,
    ):
        assert sorted(warm_weights) == sorted(fresh_weights)
        for name in fresh_weights:
            np.testing.assert_array_equal(warm_weights[name], fresh_weights[name])


# The server's imports, then the entry point as its forked child runs it; prints what it imported.
SERVER_THEN_TRAINING = """
import importlib, json, sys
from crpbot_assets import warm_trainer
for module in warm_trainer.WARM_IMPORTS:
    importlib.import_module(module)
before = set(sys.modules)
sys.argv = [warm_trainer.ENTRY_POINT_MODULE]
code = warm_trainer._run_module(warm_trainer.ENTRY_POINT_MODULE)
print(json.dumps({"code": code, "imported": sorted(set(sys.modules) - before)}))
"""


def test_a_training_imports_no_library_the_server_did_not(tmp_path, datasets):
    """What a training imports on first use (scikit-learn, arch) belongs in WARM_IMPORTS: each
    forked training would import it again (0.5 CPU s of 3.8 when they were missing)."""
    done = _train(["-c", SERVER_THEN_TRAINING], _container(tmp_path, datasets), tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    late = [
        name
        for name in result["imported"]
        if name.split(".")[0] not in {"v8_model", "__main__"}
        # one module that torch's profiler hooks import on the first optimizer step
        and not name.startswith("torch.profiler.")
    ]
    assert not late, f"a training imported {late}: add them to WARM_IMPORTS"


def test_a_failed_training_gives_its_exit_code_and_reason(tmp_path, datasets, warm_trainer_server):
    hyperparameters = {**HYPERPARAMETERS, "epochs": "0"}
    env = _warm(_container(tmp_path, datasets, hyperparameters), warm_trainer_server)
    result = _train(["-m", "crpbot_assets.warm_trainer"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    reason = (tmp_path / "output" / "failure").read_text()
    assert "epochs" in reason
    assert not (tmp_path / "model" / "ETH").exists()


def test_the_training_dies_with_its_request_process(tmp_path, datasets, warm_trainer_server):
    request, training = _start_long_training(tmp_path, datasets, warm_trainer_server)
    request.kill()
    request.wait(timeout=TIMEOUT)
    assert gone_within(training, 30), "the training outlived its request process"


def test_sigint_reaches_the_training(tmp_path, datasets, warm_trainer_server):
    """Pipes stops a training with SIGINT: the request process forwards it to the training,
    which stops where it is, in the entry point's loop."""
    request, training = _start_long_training(tmp_path, datasets, warm_trainer_server)
    # Training has begun once its first epoch line is out (bounded by the 50 epochs' lines).
    for _ in range(100):
        if "epoch=1 " in request.stdout.readline():
            break
    request.send_signal(signal.SIGINT)
    _, stderr = request.communicate(timeout=TIMEOUT)
    assert request.returncode == 1, stderr
    assert "KeyboardInterrupt" in stderr and "v8_model/model/" in stderr, stderr
    assert gone_within(training, 30)


def test_a_request_process_that_ends_before_asking_leaves_the_server_serving(tmp_path, datasets):
    """A request process killed while it starts (e.g. its run stopped) connects and is gone
    before it sends: the server drops that connection and serves the next request."""
    server, socket_path = warm_trainer.start_server(os.getpid())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as gone:
            gone.connect(socket_path)
        hyperparameters = {**HYPERPARAMETERS, "epochs": "0"}  # fails at once, with its reason
        env = _warm(_container(tmp_path, datasets, hyperparameters), socket_path)
        result = _train(["-m", "crpbot_assets.warm_trainer"], env, tmp_path)
        assert result.returncode == 1, result.stderr
        assert "epochs" in (tmp_path / "output" / "failure").read_text()
        assert server.poll() is None
    finally:
        warm_trainer.stop_server(server)


def test_a_request_without_a_server_trains_in_a_fresh_interpreter(tmp_path, datasets):
    """A server that is gone (ended, or killed) costs speed, never a training."""
    missing = str(tmp_path / "no-such-socket")
    hyperparameters = {**HYPERPARAMETERS, "epochs": "0"}  # the entry point's own check fails it
    env = _warm(_container(tmp_path, datasets, hyperparameters), missing)
    result = _train(["-m", "crpbot_assets.warm_trainer"], env, tmp_path)
    assert f"no warm trainer server at {missing}" in result.stderr
    assert "training in a fresh interpreter" in result.stderr
    # The entry point ran: its failure file names the setting, and its exit code is its own.
    assert result.returncode == 1, result.stderr
    assert "epochs" in (tmp_path / "output" / "failure").read_text()


def test_the_server_ends_with_its_owner_and_removes_its_socket(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    log = tmp_path / "server.log"
    try:
        server, socket_path = warm_trainer.start_server(owner.pid, log)
        assert Path(socket_path).exists()
    finally:
        owner.kill()
        owner.wait()
    assert server.wait(timeout=TIMEOUT) == 0
    assert not Path(socket_path).parent.exists()
    assert log.read_text() == "warm trainer server: its owner ended\n"  # says why


def test_the_local_trainer_asks_the_server_only_for_its_own_interpreter(monkeypatch):
    monkeypatch.delenv(warm_trainer.WARM_TRAINER_ENV_VAR, raising=False)
    assert LocalTrainer().entry_point_command()[1:] == ["-m", "v8_model.job.train"]
    monkeypatch.setenv(warm_trainer.WARM_TRAINER_ENV_VAR, "/tmp/socket")
    assert LocalTrainer().entry_point_command()[1:] == ["-m", "crpbot_assets.warm_trainer"]
    other = LocalTrainer(python="/usr/bin/python3")
    assert other.entry_point_command() == ["/usr/bin/python3", "-m", "v8_model.job.train"]


def _start_long_training(root: Path, datasets, socket_path: str) -> tuple[subprocess.Popen, int]:
    """A request process for a 50-epoch training, and the training's pid once it is forked."""
    env = _warm(_container(root, datasets, {**HYPERPARAMETERS, "epochs": "50"}), socket_path)
    request = subprocess.Popen(
        [sys.executable, "-m", "crpbot_assets.warm_trainer"],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return request, _wait_for_training_in(root, request.pid)


def _wait_for_training_in(folder: Path, request: int) -> int:
    """The training forked for `request`, which works in `folder` too (bounded wait)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        trainings = [pid for pid in processes_working_in([folder]) if pid != request]
        if trainings:
            return trainings[0]
        time.sleep(0.1)
    raise TimeoutError(f"no training works in {folder}")
