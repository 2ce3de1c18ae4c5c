"""The net's shape, the split fractions and the label settings are `TrainConfig` settings: their
defaults are the seed's values, each is checked, and each changes what is built."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from v8_model.config import (
    HyperparameterError,
    TrainConfig,
    from_hyperparameters,
    setting_text,
    to_hyperparameters,
)
from v8_model.data.features import FEATURE_NAMES
from v8_model.data.labels import SELL, forward_return_scores
from v8_model.data.processor import ProcessorLoadError, V8FeatureProcessor
from v8_model.data.segments import fit_processor, prepare_segments
from v8_model.data.settings import DATA_SETTING_NAMES, DataSettings
from v8_model.data.split import DEFAULT_FRACTIONS, chronological_split
from v8_model.defaults import DEFAULT_HORIZON, LABEL_VOLATILITY_WINDOW
from v8_model.evaluation.walkforward import fold_splits
from v8_model.model.loop import TrainingParts
from v8_model.model.net import V8TradingNet, load_model, save_model

ROWS = 12_000
CHANGED = DataSettings(
    train_fraction=0.5,
    val_fraction=0.3,
    label_horizon=30,
    label_volatility_window=120,
    label_sell_quantile=0.2,
    label_buy_quantile=0.7,
)


@pytest.fixture(scope="module")
def dataset() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        rng.normal(0, 1, (ROWS, len(FEATURE_NAMES))).astype(np.float32),
        columns=list(FEATURE_NAMES),
    )
    frame.insert(0, "close", 100 * np.exp(np.cumsum(rng.normal(0, 0.001, ROWS))))
    frame.insert(0, "timestamp", pd.date_range("2025-01-01", periods=ROWS, freq="min", tz="UTC"))
    return frame


def test_the_defaults_are_the_seeds_values():
    config = TrainConfig()
    assert config.hidden_widths == (512, 256, 128)
    assert (config.train_fraction, config.val_fraction) == (0.70, 0.15)
    assert (config.label_horizon, config.label_volatility_window) == (15, 24 * 60)
    assert (DEFAULT_HORIZON, LABEL_VOLATILITY_WINDOW) == (15, 24 * 60)
    assert (config.label_sell_quantile, config.label_buy_quantile) == (1 / 3, 2 / 3)
    assert pytest.approx((0.70, 0.15, 0.15)) == DEFAULT_FRACTIONS
    assert V8TradingNet().config["hidden"] == [512, 256, 128]
    assert DataSettings.of(config) == DataSettings()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_widths": ()}, "hidden_widths must be a non-empty sequence of positive integers"),
        ({"hidden_widths": (64, 0)}, "hidden_widths must be a non-empty sequence of positive"),
        ({"hidden_widths": (64, 2.5)}, "hidden_widths must be a non-empty sequence of positive"),
        ({"hidden_widths": "64"}, "hidden_widths must be a non-empty sequence of positive"),
        ({"hidden_widths": (True,)}, "hidden_widths must be a non-empty sequence of positive"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\), got 0.0"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\), got 1.0"),
        ({"val_fraction": float("nan")}, r"val_fraction must be in \(0, 1\)"),
        ({"train_fraction": 0.8, "val_fraction": 0.2}, "train_fraction \\+ val_fraction must be"),
        ({"label_horizon": 0}, "label_horizon is a number of 1-minute bars and must be an int"),
        ({"label_horizon": 1.5}, "label_horizon is a number of 1-minute bars"),
        ({"label_volatility_window": 1}, "label_volatility_window must be at least 2 bars"),
        ({"label_sell_quantile": 0.0}, "0 < label_sell_quantile < label_buy_quantile < 1"),
        ({"label_sell_quantile": 0.7}, "0 < label_sell_quantile < label_buy_quantile < 1"),
        ({"label_buy_quantile": 1.0}, "0 < label_sell_quantile < label_buy_quantile < 1"),
    ],
)
def test_each_setting_is_checked_with_a_message_naming_it(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)
    if set(changes) <= set(DATA_SETTING_NAMES):  # and where the data side builds its own
        with pytest.raises(ValueError, match=message):
            DataSettings(**changes)


def test_a_list_of_widths_is_kept_as_a_tuple_and_written_as_a_list():
    config = TrainConfig(hidden_widths=[64, 32])
    assert config.hidden_widths == (64, 32) and config == TrainConfig(hidden_widths=(64, 32))
    assert config.to_dict()["hidden_widths"] == [64, 32]
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()


def test_hidden_widths_travel_as_comma_separated_integers():
    config = TrainConfig(hidden_widths=(64, 32), label_horizon=30, train_fraction=0.6)
    rendered = to_hyperparameters(config)
    assert rendered["hidden-widths"] == "64,32" and rendered["label-horizon"] == "30"
    assert from_hyperparameters(rendered) == config
    assert from_hyperparameters({"hidden_widths": "[16, 8]"}).hidden_widths == (16, 8)
    assert from_hyperparameters({"hidden-widths": " 16, 8 "}).hidden_widths == (16, 8)
    assert from_hyperparameters({"hidden-widths": "16"}).hidden_widths == (16,)
    assert setting_text(config.hidden_widths) == "64,32" and setting_text(None) == ""
    for bad in ("16,,8", "wide", "16;8", "1.5", ""):
        with pytest.raises(HyperparameterError, match="'hidden-widths': expected comma-separated"):
            from_hyperparameters({"hidden-widths": bad})
    with pytest.raises(ValueError, match="hidden_widths must be a non-empty sequence"):
        from_hyperparameters({"hidden-widths": "16,-8"})


def test_the_net_is_built_with_the_configured_widths(tmp_path):
    config = TrainConfig(hidden_widths=(16, 8), device="cpu")
    parts = TrainingParts.build(config, len(FEATURE_NAMES), steps=1, device=torch.device("cpu"))
    linear = [m for m in parts.model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(72, 16), (16, 8), (8, 3)]
    save_model(parts.model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architecture"]["hidden"] == [16, 8]
    assert load_model(tmp_path).config["hidden"] == [16, 8]


def test_the_split_follows_the_fractions(dataset):
    default = prepare_segments(dataset).split
    changed = prepare_segments(dataset, settings=CHANGED).split
    usable = ROWS - 2 * changed.embargo
    assert changed.embargo == 30 + 200 and default.embargo == 15 + 200
    assert changed.train == slice(0, int(usable * 0.5))
    assert changed.validation.stop - changed.validation.start == int(usable * 0.3)
    assert changed == chronological_split(ROWS, fractions=CHANGED.fractions, horizon=30)
    assert default == chronological_split(ROWS)
    # The walk-forward folds cut training and validation at the same ratio (0.5 : 0.3).
    first, main = fold_splits(ROWS, 2, 30, CHANGED.fractions)
    assert main == changed
    before_test = first.test.start - first.embargo
    assert first.train.stop == int((before_test - first.embargo) * 0.5 / 0.8)


def test_the_labels_follow_the_horizon_window_and_quantiles(dataset):
    processor = fit_processor(dataset, "BTC", CHANGED)
    assert processor.horizon == processor.thresholds.horizon == 30
    scores = forward_return_scores(dataset["close"], horizon=30, volatility_window=120)
    train_scores = scores[prepare_segments(dataset, settings=CHANGED).split.train]
    finite = train_scores[np.isfinite(train_scores)]
    expected = np.quantile(finite, [0.2, 0.7])
    assert (processor.thresholds.sell_below, processor.thresholds.buy_above) == tuple(expected)
    default = fit_processor(dataset, "BTC")
    assert default.thresholds.horizon == 15 and default.thresholds != processor.thresholds
    labels = processor.labels(finite)
    assert np.mean(labels == SELL) == pytest.approx(0.2, abs=0.01)


def test_a_processor_records_its_settings_and_reads_them_back(dataset, tmp_path):
    processor = fit_processor(dataset, "BTC", CHANGED)
    path = processor.save(tmp_path / "p.json")
    payload = json.loads(path.read_text())
    assert payload["settings"] == dataclasses.asdict(CHANGED)
    assert V8FeatureProcessor.load(path).settings == CHANGED
    # A file from before the settings were recorded was fitted with the defaults.
    default_path = fit_processor(dataset, "BTC").save(tmp_path / "old.json")
    old = json.loads(default_path.read_text())
    del old["settings"]
    default_path.write_text(json.dumps(old))
    assert V8FeatureProcessor.load(default_path).settings == DataSettings()
    payload["settings"]["label_horizon"] = 15
    path.write_text(json.dumps(payload))
    with pytest.raises(ProcessorLoadError, match="horizon 30 but settings say label_horizon 15"):
        V8FeatureProcessor.load(path)
    payload["settings"] = {**dataclasses.asdict(CHANGED), "val_fraction": 0.6}
    path.write_text(json.dumps(payload))
    with pytest.raises(ProcessorLoadError, match="corrupt processor file.*val_fraction"):
        V8FeatureProcessor.load(path)


def test_a_processor_fitted_with_other_settings_is_refused(dataset):
    processor = fit_processor(dataset, "BTC")
    with pytest.raises(ValueError, match="BTC processor was fitted with other split or label") as e:
        prepare_segments(dataset, processor, "BTC", settings=CHANGED)
    assert "train_fraction 0.7 vs 0.5" in str(e.value) and "label_horizon 15 vs 30" in str(e.value)
    same = prepare_segments(dataset, processor, "BTC", settings=DataSettings())
    assert same.processor is processor
