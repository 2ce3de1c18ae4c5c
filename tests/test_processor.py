import json

import numpy as np
import pandas as pd
import pytest

from v8_model.data.features import FEATURE_NAMES
from v8_model.data.processor import ProcessorLoadError, V8FeatureProcessor, processor_filename


@pytest.fixture
def fitted() -> V8FeatureProcessor:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(5, 3, (2_000, 72)), columns=list(FEATURE_NAMES))
    return V8FeatureProcessor(symbol="BTC").fit(frame, rng.standard_normal(2_000))


def test_fit_transform_standardises_training_rows():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(5, 3, (5_000, 72)), columns=list(FEATURE_NAMES))
    processor = V8FeatureProcessor().fit(frame, rng.standard_normal(5_000))
    scaled = processor.transform(frame)
    assert scaled.dtype == np.float32 and scaled.shape == (5_000, 72)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=0), 1, atol=1e-4)


def test_transform_needs_fit_and_columns(fitted):
    with pytest.raises(RuntimeError, match="not fitted"):
        V8FeatureProcessor().transform(pd.DataFrame())
    with pytest.raises(ValueError, match="missing 1"):
        fitted.transform(pd.DataFrame(np.zeros((2, 71)), columns=list(FEATURE_NAMES[1:])))


def test_save_load_round_trip_is_json(fitted, tmp_path):
    path = fitted.save(tmp_path / processor_filename("BTC"))
    assert path.name == "processor_BTC_v8.json"
    payload = json.loads(path.read_text())
    assert payload["feature_names"] == list(FEATURE_NAMES)
    loaded = V8FeatureProcessor.load(path)
    frame = pd.DataFrame(np.random.default_rng(2).normal(size=(10, 72)), columns=FEATURE_NAMES)
    np.testing.assert_array_equal(loaded.transform(frame), fitted.transform(frame))
    assert loaded.thresholds == fitted.thresholds and loaded.symbol == "BTC"


def _edit(path, change):
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(format_version=2), "format version 2"),
        (lambda p: p.update(format="something.else"), "not a V8 processor"),
        (lambda p: p["feature_names"].reverse(), "column 0"),
        (lambda p: p["feature_names"].pop(), "found 71 names"),
        (lambda p: p["scaler"].pop("mean"), "corrupt"),
        (lambda p: p["scaler"].update(mean=[1.0] * 3), "shapes"),
        (lambda p: p["scaler"]["scale"].__setitem__(0, 0.0), "zero scale"),
        (lambda p: p["label_thresholds"].update(sell_below=5.0, buy_above=-5.0), "out of order"),
    ],
)
def test_load_refuses_mismatches(fitted, tmp_path, change, message):
    path = fitted.save(tmp_path / "p.json")
    _edit(path, change)
    with pytest.raises(ProcessorLoadError, match=message):
        V8FeatureProcessor.load(path)


def test_load_refuses_missing_and_non_json(tmp_path):
    with pytest.raises(ProcessorLoadError, match="not found"):
        V8FeatureProcessor.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_bytes(b"\x80\x04\x95 pickle bytes")
    with pytest.raises(ProcessorLoadError, match="not JSON"):
        V8FeatureProcessor.load(tmp_path / "bad.json")


def test_features_constant_on_the_training_rows_are_refused_by_name():
    # One traded minute after the training segment: every volume feature is constant (0) on the
    # training rows, which the scaler would otherwise leave unscaled and the gates never see.
    from v8_model.data.features import build_features_dataset
    from v8_model.data.segments import fit_processor
    from v8_model.data.synthetic import generate_candles

    candles = generate_candles("BTC", minutes=6 * 1440, seed=1)
    candles["volume"] = 0.0
    candles.loc[len(candles) - 100, "volume"] = 5.0
    dataset = build_features_dataset(candles)
    with pytest.raises(ValueError, match="constant on all") as info:
        fit_processor(dataset, "BTC")
    message = str(info.value)
    assert "'volume_ratio_20'" in message and "'chaikin_money_flow_20'" in message
    assert "'log_return'" not in message  # prices still move: only volume features named
    assert "volume that is zero" in message


def test_scale_in_place_gives_the_figures_of_transform_in_the_same_matrix(fitted):
    rng = np.random.default_rng(3)
    matrix = rng.normal(5, 3, (70_000, 72)).astype(np.float32)  # more than one chunk
    expected = fitted.transform(pd.DataFrame(matrix, columns=list(FEATURE_NAMES)))
    scaled = fitted.scale_in_place(matrix)
    assert scaled is matrix
    np.testing.assert_array_equal(matrix, expected)
    with pytest.raises(ValueError, match="float32 matrix, got float64"):
        fitted.scale_in_place(np.zeros((2, 72)))
    with pytest.raises(RuntimeError, match="not fitted"):
        V8FeatureProcessor().scale_in_place(np.zeros((2, 72), dtype=np.float32))
