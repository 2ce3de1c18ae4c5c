"""One training-settings schema, one evaluation record, and a Dagster side that loads no torch."""

import argparse
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from v8_model.config import (
    HYPERPARAMETER_NAMES,
    HyperparameterError,
    TrainConfig,
    add_hyperparameter_arguments,
    from_hyperparameters,
    to_hyperparameters,
)
from v8_model.data.labels import LabelThresholds
from v8_model.evaluation.gates import evaluate_gates, evaluation_metrics
from v8_model.evaluation.metrics import EpochStats, Evaluation, SegmentRows, metrics_fields
from v8_model.record import RecordError

NON_DEFAULT = TrainConfig(
    epochs=7,
    batch_size=64,
    learning_rate=3e-4,
    weight_decay=0.0,
    patience=2,
    grad_clip=0.5,
    seed=11,
    dropout=0.1,
    temperature_init=1.5,
    loss="cross_entropy",
    focal_alpha=0.5,
    focal_gamma=1.0,
    label_smoothing=0.05,
    device="cpu",
    folds=2,
    skill_alpha=0.05,
    fee_bps=25.0,
    slippage_bps=5.0,
    long_only=True,
    min_confidence=0.5,
    hidden_widths=(64, 32),
    train_fraction=0.6,
    val_fraction=0.2,
    label_horizon=30,
    label_volatility_window=720,
    label_sell_quantile=0.25,
    label_buy_quantile=0.75,
)


def test_every_setting_differs_from_its_default_in_the_fixture():
    """So the round trip below would notice a setting the rendering drops."""
    default = TrainConfig()
    same = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(NON_DEFAULT, f.name) == getattr(default, f.name)
    ]
    assert same == []


@pytest.mark.parametrize("config", [TrainConfig(), NON_DEFAULT], ids=["default", "non-default"])
def test_hyperparameters_round_trip(config):
    rendered = to_hyperparameters(config)
    assert all(isinstance(v, str) for v in rendered.values())
    assert from_hyperparameters(rendered) == config
    # SageMaker may JSON-encode each value once more; the parse undoes it.
    encoded = {name: json.dumps(value) for name, value in rendered.items()}
    assert from_hyperparameters(encoded) == config


def test_rendering_names_every_field_once():
    assert sorted(to_hyperparameters(NON_DEFAULT)) == sorted(HYPERPARAMETER_NAMES)
    assert len(HYPERPARAMETER_NAMES) == len(dataclasses.fields(TrainConfig))


def test_bad_hyperparameters_name_the_setting():
    with pytest.raises(HyperparameterError, match="job.json: unknown hyperparameter 'all'"):
        from_hyperparameters({"all": "True"}, source="job.json")
    with pytest.raises(HyperparameterError, match="'batch-size': expected int, got 2.5"):
        from_hyperparameters({"batch-size": "2.5"})
    with pytest.raises(ValueError, match="training setting loss must be one of"):
        from_hyperparameters({"loss": "hinge"})


@pytest.mark.parametrize("name", ["weight-decay", "focal-gamma"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5"])
def test_weight_decay_and_focal_gamma_refuse_nan_inf_and_negatives(name: str, value: str):
    """`nan < 0` is False, so a plain sign test let `--weight-decay nan` train a NaN model."""
    field = name.replace("-", "_")
    with pytest.raises(ValueError, match=f"training setting {field} must be a finite number >= 0"):
        from_hyperparameters({name: value})
    assert getattr(from_hyperparameters({name: "0"}), field) == 0.0  # zero stays allowed


def test_argument_parser_is_generated_from_the_fields():
    parser = argparse.ArgumentParser()
    add_hyperparameter_arguments(parser)
    argv = []
    for name, value in to_hyperparameters(NON_DEFAULT).items():
        argv += [f"--{name}", value]
    parsed = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    assert from_hyperparameters(parsed) == NON_DEFAULT
    # SageMaker's driver may spell flags with underscores.
    assert vars(parser.parse_args(["--batch_size", "32"]))["batch-size"] == "32"


def _evaluation(history: list[EpochStats] | None) -> Evaluation:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3)) + np.eye(3)[labels]
    gates = evaluate_gates(rng.standard_normal((600, 72)), logits)
    return Evaluation(
        **metrics_fields(evaluation_metrics(logits, labels, labels[:300])),
        symbol="BTC",
        rows=1000,
        first_timestamp="2024-01-01 00:00:00+00:00",
        last_timestamp="2024-01-01 16:39:00+00:00",
        segment_rows=SegmentRows(train=300, validation=100, test=600),
        embargo_rows=215,
        test_start="2024-01-01 06:40:00+00:00",
        label_thresholds=LabelThresholds(-0.4, 0.4, 15),
        train_seconds=1.5,
        device="cpu",
        epochs_run=2,
        best_epoch=1,
        best_val_loss=0.25,
        stopped_early=False,
        history=history,
        hyperparameters=NON_DEFAULT,
        gates=gates,
        all_gates_passed=all(g.passed for g in gates.values()),
    )


HISTORY = [EpochStats(1, 0.3, 0.25, 0.5, 1e-3), EpochStats(2, 0.28, 0.26, 0.49, 5e-4)]


def test_evaluation_json_round_trip():
    evaluation = _evaluation(HISTORY)
    assert Evaluation.from_json(evaluation.to_json()) == evaluation
    assert isinstance(Evaluation.from_json(evaluation.to_json()).reliability[0].count, int)


def test_a_record_without_history_still_reads():
    data = _evaluation(HISTORY).to_dict()
    del data["history"]
    assert Evaluation.from_dict(data).history is None


def test_a_record_from_before_the_data_settings_reads_them_as_the_defaults():
    """A champion's metrics.json written before the net's shape, split and labels were
    settings was made with their defaults, and must still read (the monitor reads it)."""
    data = _evaluation(HISTORY).to_dict()
    later = ("hidden_widths", "train_fraction", "val_fraction", "label_horizon")
    later += ("label_volatility_window", "label_sell_quantile", "label_buy_quantile")
    for name in later:
        del data["hyperparameters"][name]
    read = Evaluation.from_dict(data).hyperparameters
    assert [getattr(read, name) for name in later] == [getattr(TrainConfig(), n) for n in later]
    assert read.epochs == NON_DEFAULT.epochs  # the rest as recorded
    # Every older setting is still required.
    del data["hyperparameters"]["epochs"]
    with pytest.raises(RecordError, match=r"missing key\(s\) \['epochs'\]"):
        Evaluation.from_dict(data)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d.update(surprise=1), r"m.json: Evaluation: unknown key\(s\) \['surprise'\]"),
        (lambda d: d.pop("ece"), r"m.json: Evaluation: missing key\(s\) \['ece'\]"),
        (lambda d: d.update(test_rows="600"), "m.json: test_rows: expected int, got '600'"),
        (lambda d: d["gates"]["logit_range"].pop("passed"), "gates.logit_range: missing key"),
        (lambda d: d["hyperparameters"].update(epochs=0), "epochs must be positive"),
        (
            lambda d: d["hyperparameters"].update(hidden_widths="64,32"),
            "hyperparameters.hidden_widths: expected a list",
        ),
        (
            lambda d: d["hyperparameters"].update(hidden_widths=[64, 0]),
            "hidden_widths must be a non-empty sequence of positive integers",
        ),
        (lambda d: d["reliability"][0].update(count=1.5), r"reliability\[0\].count: expected int"),
    ],
)
def test_bad_records_are_refused_with_the_file_and_key(change, words):
    data = _evaluation(HISTORY).to_dict()
    change(data)
    with pytest.raises(RecordError, match=words):
        Evaluation.from_dict(data, source="m.json")


def test_loading_the_dagster_definitions_imports_no_torch():
    code = "import sys, crpbot_assets.definitions; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_sagemaker_bucket_and_prefix_come_from_an_s3_storage_root(monkeypatch):
    from crpbot_assets.sagemaker.settings import SageMakerSettings

    monkeypatch.setenv("CRPBOT_ROOT", "s3://team-bucket/v8/runs/")
    settings = SageMakerSettings()
    assert (settings.bucket, settings.prefix) == ("team-bucket", "v8/runs")
    assert settings.storage_root() == "s3://team-bucket/v8/runs"
    assert SageMakerSettings(bucket="other").bucket == "other"  # an explicit setting still wins
    monkeypatch.setenv("CRPBOT_ROOT", "/srv/crpbot")  # a local root: the seed's bucket
    assert (SageMakerSettings().bucket, SageMakerSettings().prefix) == (
        "crpbot-sagemaker-training",
        "",
    )


def test_the_loss_comes_from_the_config():
    import torch

    from v8_model.model.loss import FocalLoss, build_loss

    focal = build_loss(TrainConfig(focal_alpha=0.5, focal_gamma=1.0, label_smoothing=0.0))
    assert isinstance(focal, FocalLoss) and (focal.alpha, focal.gamma) == (0.5, 1.0)
    logits, target = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    cross_entropy = build_loss(TrainConfig(loss="cross_entropy", label_smoothing=0.0))
    expected = -torch.log_softmax(logits, dim=1)[0, 0]
    assert torch.isclose(cross_entropy(logits, target), expected)
    # Focal loss with gamma 0, alpha 1 and no smoothing is cross-entropy.
    plain = build_loss(TrainConfig(focal_alpha=1.0, focal_gamma=0.0, label_smoothing=0.0))
    assert torch.isclose(plain(logits, target), expected)
