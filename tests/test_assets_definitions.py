"""The code location's shape, profiles, the emulated container and the trainer's failure path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.assets import model
from crpbot_assets.checks import FEATURES_CHECK_NAMES
from crpbot_assets.definitions import defs
from crpbot_assets.monitor import MONITOR_CHECK_NAMES
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import (
    PROFILE_ENV_VAR,
    ProfileResource,
    default_profile_name,
    get_profile,
)
from crpbot_assets.sagemaker.container import emulate_training_container
from crpbot_assets.storage import StorageResource, features_key, model_folder, processor_key
from crpbot_assets.trainers import LocalTrainer
from v8_model.config import TrainConfig, to_hyperparameters
from v8_model.defaults import (
    SYMBOLS,
)
from v8_model.evaluation.gates import GATE_NAMES

REPO = Path(__file__).resolve().parents[1]


def test_dagster_definitions_validate(tmp_path):
    """What `dagster dev` loads from workspace.yaml in the repo root is a valid code location."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr


def test_one_partition_per_symbol():
    assert symbol_partitions.get_partition_keys() == list(SYMBOLS)


def test_asset_graph():
    graph = defs.resolve_asset_graph()
    assert {key.to_user_string() for key in graph.get_all_asset_keys()} == {
        "candles",
        "features",
        "processor",
        "model",
        "backtest",
        "production_model",
        "gate_report",
        "model_monitor",
    }
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["processor"] == {"features"}
    assert parents["model"] == {"features", "processor"}
    assert parents["backtest"] == {"model"}
    assert parents["production_model"] == {"model", "backtest"}
    assert parents["gate_report"] == {"model"}
    assert parents["model_monitor"] == {"features", "production_model"}
    assert graph.get(dg.AssetKey("gate_report")).partitions_def is None


def test_checks_are_blocking_and_partitioned():
    graph = defs.resolve_asset_graph()
    expected = {dg.AssetCheckKey(dg.AssetKey("model"), name) for name in GATE_NAMES}
    expected |= {dg.AssetCheckKey(dg.AssetKey("features"), name) for name in FEATURES_CHECK_NAMES}
    expected |= {dg.AssetCheckKey(dg.AssetKey("backtest"), "profitable_after_costs")}
    # The monitor's checks are alarms about the serving model: nothing runs after them to block.
    monitor = {dg.AssetCheckKey(dg.AssetKey("model_monitor"), name) for name in MONITOR_CHECK_NAMES}
    assert set(graph.asset_check_keys) == expected | monitor
    for key in expected | monitor:
        spec = graph.get_check_spec(key)
        assert spec.blocking == (key in expected)
        assert spec.partitions_def == symbol_partitions


def test_alert_sensor_runs_by_default():
    sensor = defs.resolve_sensor_def("gate_failure_alerts")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_profiles():
    full = get_profile("full")
    assert (full.days, full.train.epochs, full.train.batch_size, full.train.learning_rate) == (
        730,
        100,
        256,
        0.001,
    )
    assert to_hyperparameters(full.train)["epochs"] == "100"
    demo = get_profile("demo")
    assert demo.days == 60 and demo.train.epochs < full.train.epochs
    assert demo.min_rows > 1000  # a 1,000-row sample is refused
    assert ProfileResource(name="full", epochs=3).get().train.epochs == 3
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        ProfileResource(name="huge").get()


def test_profile_from_env(monkeypatch):
    monkeypatch.setenv(PROFILE_ENV_VAR, "full")
    assert default_profile_name() == "full"
    monkeypatch.delenv(PROFILE_ENV_VAR)
    assert default_profile_name() == "demo"


def test_emulated_container(tmp_path):
    container = emulate_training_container(
        tmp_path / "ml",
        job_name="job-1",
        hyperparameters={"epochs": "2", "batch-size": "64"},
        num_gpus=0,
    )
    config = container.config_dir
    assert json.loads((config / "hyperparameters.json").read_text()) == {
        "epochs": "2",
        "batch-size": "64",
    }
    data_config = json.loads((config / "inputdataconfig.json").read_text())
    assert data_config["training"]["ContentType"] == "application/x-parquet"
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    env = container.env
    assert env["SM_CHANNEL_TRAINING"] == str(container.channel_dir("training"))
    assert env["SM_CHANNEL_PROCESSOR"] == str(container.channel_dir("processor"))
    assert json.loads(env["SM_CHANNELS"]) == ["processor", "training"]
    assert json.loads(env["SM_HPS"]) == {"epochs": "2", "batch-size": "64"}
    assert env["SM_HP_BATCH_SIZE"] == "64"
    assert (env["SM_NUM_GPUS"], env["SM_CURRENT_HOST"], env["TRAINING_JOB_NAME"]) == (
        "0",
        "algo-1",
        "job-1",
    )
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"]
    assert all(Path(env[k]).is_dir() for k in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR"))
    assert container.failure_reason() is None


def run_model_only(tmp_path, instance, hyperparameters: dict[str, str]):
    storage = StorageResource(root=str(tmp_path / "root"))
    # Placeholders: both failures below happen before the entry point reads its channels.
    storage.store.write_text(features_key("BTC"), "not parquet")
    storage.store.write_text(processor_key("BTC"), "{}")
    result = dg.materialize(
        [model],
        partition_key="BTC",
        instance=instance,
        resources={"storage": storage, "profile": ProfileResource(), "trainer": LocalTrainer()},
        run_config={"ops": {"model": {"config": {"hyperparameters": hyperparameters}}}},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert not storage.store.list_keys(model_folder("BTC"))
    return failure.step_failure_data.user_failure_data.description


def test_entry_point_failure_reason_reaches_dagster(tmp_path, dagster_instance):
    reason = run_model_only(tmp_path, dagster_instance, {"epochs": "-1"})
    with pytest.raises(ValueError) as expected:  # what the entry point writes to its failure file
        TrainConfig(epochs=-1)
    assert reason.startswith("training BTC failed")
    assert reason.endswith(f"ValueError: {expected.value}")


def test_unknown_hyperparameters_are_refused_before_training(tmp_path, dagster_instance):
    reason = run_model_only(tmp_path, dagster_instance, {"epoch": "3"})
    assert reason.startswith("unknown hyperparameter(s) ['epoch']; known: ")


def test_the_profile_sets_the_nets_shape_split_and_labels():
    train = ProfileResource(hidden_widths=[16, 8], label_horizon=30, train_fraction=0.6).get().train
    assert (train.hidden_widths, train.label_horizon, train.train_fraction) == ((16, 8), 30, 0.6)
    rendered = to_hyperparameters(train)
    assert (rendered["hidden-widths"], rendered["label-horizon"]) == ("16,8", "30")
    with pytest.raises(ValueError, match="train_fraction \\+ val_fraction must be below 1"):
        ProfileResource(train_fraction=0.9).get()


def test_the_processor_is_fitted_with_the_profiles_split_and_label_settings(
    tmp_path, dagster_instance
):
    from crpbot_assets.assets import processor
    from v8_model.data.features import build_features_dataset
    from v8_model.data.processor import V8FeatureProcessor
    from v8_model.data.synthetic import generate_candles

    storage = StorageResource(root=str(tmp_path / "root"))
    dataset = build_features_dataset(generate_candles("BTC", minutes=3 * 1440, seed=2))
    storage.store.write_bytes(features_key("BTC"), dataset.to_parquet())
    profile = ProfileResource(label_horizon=30, train_fraction=0.6, label_sell_quantile=0.25)
    result = dg.materialize(
        [processor],
        partition_key="BTC",
        instance=dagster_instance,
        resources={"storage": storage, "profile": profile},
    )
    assert result.success
    path = tmp_path / "processor.json"
    path.write_text(storage.store.read_text(processor_key("BTC")))
    fitted = V8FeatureProcessor.load(path)
    assert (fitted.horizon, fitted.settings.train_fraction) == (30, 0.6)
    assert fitted.settings.quantiles == (0.25, 2 / 3)
    [materialization] = result.asset_materializations_for_node("processor")
    assert materialization.metadata["settings"].data["label_horizon"] == 30


def test_split_and_label_settings_are_refused_as_model_hyperparameters(tmp_path, dagster_instance):
    """The processor was fitted with the profile's: a model overriding them would be refused
    by the trainer only after a job started."""
    reason = run_model_only(tmp_path, dagster_instance, {"label-horizon": "30", "epochs": "1"})
    assert reason.startswith("['label-horizon'] split and label the rows the processor")
    assert "set them on the profile resource" in reason


@pytest.mark.parametrize(
    ("listing", "gpus"),
    [
        ("GPU 0: NVIDIA H100 (UUID: GPU-a)\\nGPU 1: NVIDIA H100 (UUID: GPU-b)\\n", "2"),
        ("", "0"),
        (None, "0"),  # no nvidia-smi on PATH: no GPU, as SageMaker's toolkit counts
    ],
)
def test_emulated_container_counts_gpus_as_the_training_toolkit_does(
    tmp_path, monkeypatch, listing, gpus
):
    tools = tmp_path / "bin"
    tools.mkdir()
    if listing is not None:
        fake = tools / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\nprintf '{listing}'\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tools))
    container = emulate_training_container(tmp_path / "ml", job_name="job-1", hyperparameters={})
    assert container.env["SM_NUM_GPUS"] == gpus
