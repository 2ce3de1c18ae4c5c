"""`python -m v8_model.job.train` under an emulated SageMaker training container.

The first test starts it in a fresh interpreter, as the container does; the others start it as a
local training does, through this pytest worker's warm trainer server (`_run`).
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import training_container

from crpbot_assets.trainers import LocalTrainer
from v8_model.data.features import build_features_dataset
from v8_model.data.processor import V8FeatureProcessor, processor_filename
from v8_model.data.segments import fit_processor
from v8_model.data.synthetic import generate_candles
from v8_model.job.contract import ENTRY_POINT_MODULE
from v8_model.model.net import load_model

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(
    r"^symbol=(\w+) epoch=(\d+) train_loss=([\d.]+) val_loss=([\d.]+) val_acc=([\d.]+) lr=[\d.]+$",
    re.M,
)


@pytest.fixture(scope="module")
def datasets():
    return {
        symbol: build_features_dataset(generate_candles(symbol, minutes=10 * 1440, seed=4))
        for symbol in ("BTC", "ETH")
    }


@pytest.fixture
def container(tmp_path, datasets):
    """An /opt/ml-like tree in a temp dir, and the SM_* environment that points into it."""
    hyperparameters = {"epochs": "5", "batch-size": "512", "symbols": '"BTC,ETH"', "patience": "2"}
    return tmp_path, training_container(tmp_path, datasets, hyperparameters)


def _run(env, *args, fresh=False):
    """The entry point in the container's environment `env`: in a fresh interpreter, as a
    container starts it, or else as a local training starts it (to spare 4 CPU s of imports a
    run: this worker's warm trainer server runs the same module afresh in a fork of a process
    that imported it)."""
    if fresh:
        command = [sys.executable, "-m", ENTRY_POINT_MODULE]
    else:
        command = LocalTrainer().entry_point_command()
    return subprocess.run(
        [*command, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_writes_every_output_file(container):
    root, env = container
    result = _run(env, "--epochs", "2", fresh=True)  # the flag overrides the file's 5
    assert result.returncode == 0, result.stderr
    lines = EPOCH_LINE.findall(result.stdout)
    assert {symbol for symbol, *_ in lines} == {"BTC", "ETH"}
    assert not (root / "output" / "failure").exists()

    model_dir = root / "model"
    summary = json.loads((model_dir / "training_summary.json").read_text())
    assert summary["symbols"] == ["BTC", "ETH"]
    assert summary["hyperparameters"]["epochs"] == 2
    assert summary["hyperparameters"]["batch_size"] == 512
    for symbol in ("BTC", "ETH"):
        folder = model_dir / symbol
        expected = {"weights.npz", "config.json", processor_filename(symbol), "metrics.json"}
        assert {p.name for p in folder.iterdir()} == expected
        metrics = json.loads((folder / "metrics.json").read_text())
        for key in (
            "test_accuracy",
            "baseline_accuracy",
            "macro_f1",
            "ece",
            "class_mix",
            "train_seconds",
            "device",
        ):
            assert key in metrics, key
        assert set(metrics["gates"]) == {
            "feature_normalization",
            "logit_range",
            "confidence_calibration",
            "class_balance",
            "no_nan_inf",
            "directional_skill",
        }
        # The walk-forward worth record: one fold per the `folds` default (3).
        assert len(metrics["worth"]["folds"]) == 3
        assert set(metrics["worth"]["skill"]) >= {"rank_ic", "ci_low", "ci_high", "p_value"}
        for gate in metrics["gates"].values():
            assert set(gate) >= {"passed", "value", "threshold"}
        assert metrics["epochs_run"] <= 2 and metrics["device"] == "cpu"
        assert 0 <= metrics["test_accuracy"] <= 1
        assert summary["models"][symbol]["test_accuracy"] == metrics["test_accuracy"]
        load_model(folder)
        V8FeatureProcessor.load(folder / processor_filename(symbol))


def test_checkpoints_are_written_and_removed_once_the_model_is(container):
    root, env = container
    env["CRPBOT_CHECKPOINT_DIR"] = str(root / "checkpoints")
    (root / "checkpoints").mkdir()
    result = _run(env, "--epochs", "1", "--symbols", "BTC")
    assert result.returncode == 0, result.stderr
    assert (root / "model" / "BTC" / "weights.npz").is_file()
    assert list((root / "checkpoints").iterdir()) == []


def test_uses_the_given_processor_channel(container, datasets):
    root, env = container
    channel = root / "input" / "data" / "processor"
    channel.mkdir()
    processor = fit_processor(datasets["BTC"], "BTC")
    processor.save(channel / processor_filename("BTC"))
    env["SM_CHANNEL_PROCESSOR"] = str(channel)
    result = _run(env, "--epochs", "1", "--symbols", "BTC")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((root / "model" / "BTC" / "metrics.json").read_text())
    assert metrics["label_thresholds"]["sell_below"] == processor.thresholds.sell_below
    written = V8FeatureProcessor.load(root / "model" / "BTC" / processor_filename("BTC"))
    assert (written.scaler.mean_ == processor.scaler.mean_).all()


@pytest.mark.parametrize(
    ("args", "hyperparameters", "reason"),
    [
        (["--symbols", "BTC,XRP"], None, "XRP_features.parquet"),
        ([], {"epochs": "1", "all": "True"}, "unknown hyperparameter 'all'"),
        ([], {"epochs": "ten"}, "hyperparameter 'epochs': expected int"),
        (["--no-such-flag", "1"], None, "unrecognized arguments"),
    ],
)
def test_failure_writes_reason_and_leaves_no_model(container, args, hyperparameters, reason):
    root, env = container
    if hyperparameters is not None:
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    result = _run(env, "--epochs", "1", *args)
    assert result.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert reason in failure
    assert len(failure) <= 1024
    assert list((root / "model").iterdir()) == [], "a failed run must not leave a partial model"


DATA_FLAGS = [
    "--hidden-widths",
    "16,8",
    "--label-horizon",
    "20",
    "--train-fraction",
    "0.6",
    "--folds",
    "2",
]
DATA_FLAGS += ["--label-sell-quantile", "0.25", "--label-buy-quantile", "0.75"]


def test_the_nets_shape_split_and_labels_come_from_the_hyperparameters_and_are_recorded(
    container,
):
    from crpbot_assets.tracking import training_params
    from crpbot_assets.trainers import RunInfo
    from v8_model.evaluation.metrics import Evaluation

    root, env = container
    result = _run(env, "--epochs", "1", "--symbols", "BTC", *DATA_FLAGS)
    assert result.returncode == 0, result.stderr
    model_dir = root / "model" / "BTC"
    assert load_model(model_dir).config["hidden"] == [16, 8]
    processor = V8FeatureProcessor.load(model_dir / processor_filename("BTC"))
    assert (processor.settings.label_horizon, processor.settings.train_fraction) == (20, 0.6)
    assert processor.settings.quantiles == (0.25, 0.75)
    text = (model_dir / "metrics.json").read_text()
    evaluation = Evaluation.from_json(text)
    settings = evaluation.hyperparameters
    assert json.loads(text)["hyperparameters"]["hidden_widths"] == [16, 8]
    assert (settings.hidden_widths, settings.label_horizon) == ((16, 8), 20)
    assert (settings.label_sell_quantile, settings.label_buy_quantile) == (0.25, 0.75)
    assert evaluation.label_thresholds.horizon == evaluation.worth.horizon == 20
    # 60% of the rows left after two embargoes of horizon + 200 bars train (less unscored rows).
    usable = evaluation.rows - 2 * (20 + 200)
    assert evaluation.embargo_rows == 220
    assert int(usable * 0.6) - 1500 < evaluation.segment_rows.train <= int(usable * 0.6)
    summary = json.loads((root / "model" / "training_summary.json").read_text())
    assert summary["hyperparameters"]["label_horizon"] == 20
    run_info = RunInfo("BTC", "local", "job", "local", "t0", "t1", 1.0)
    params = training_params(evaluation, run_info, "demo")
    assert params["hidden_widths"] == "16,8" and params["label_horizon"] == "20"
    assert params["train_fraction"] == "0.6" and params["label_buy_quantile"] == "0.75"


def test_a_processor_fitted_with_other_settings_fails_the_job_naming_them(container, datasets):
    root, env = container
    channel = root / "input" / "data" / "processor"
    channel.mkdir()
    fit_processor(datasets["BTC"], "BTC").save(channel / processor_filename("BTC"))
    env["SM_CHANNEL_PROCESSOR"] = str(channel)
    result = _run(env, "--epochs", "1", "--symbols", "BTC", "--label-horizon", "20")
    assert result.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert "fitted with other split or label settings" in failure
    assert "label_horizon 15 vs 20" in failure
    assert list((root / "model").iterdir()) == []
