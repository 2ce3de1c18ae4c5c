"""Segments prepared from a FeatureMatrix (the trainer's path: one float32 matrix, compacted and
scaled in place) against those of a frame over the same values."""

import numpy as np
import pandas as pd
import pytest

from v8_model.data.features import FEATURE_NAMES, FEATURES_DATASET_COLUMNS
from v8_model.data.segments import FeatureMatrix, PreparedData, prepare_segments
from v8_model.defaults import DEFAULT_HORIZON
from v8_model.evaluation.walkforward import fold_splits
from v8_model.job.entrypoint import read_features_dataset

ROWS = 20_000
# A missing close leaves its neighbours without a score (no forward return, no trailing
# volatility), so these make holes in the middle of the training and validation segments.
MISSING_CLOSES = [5_000, 15_000]


def _values(rows: int = ROWS) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    rng = np.random.default_rng(7)
    features = rng.normal(3, 2, (rows, len(FEATURE_NAMES))).astype(np.float32)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    close[[row for row in MISSING_CLOSES if row < rows]] = np.nan
    timestamps = pd.Series(
        pd.date_range("2025-01-01", periods=rows, freq="min", tz="UTC"), name="timestamp"
    )
    return features, close, timestamps


def _frame(features: np.ndarray, close: np.ndarray, timestamps: pd.Series) -> pd.DataFrame:
    """The frame the trainer read before it read a FeatureMatrix: the float32 features over a
    row-major matrix, with the close and timestamp columns in front."""
    frame = pd.DataFrame(features.copy(), columns=list(FEATURE_NAMES), copy=False)
    frame.insert(0, "close", close)
    frame.insert(0, "timestamp", timestamps)
    return frame


def _assert_same(from_frame: PreparedData, from_matrix: PreparedData) -> None:
    for name in ("train", "validation", "test"):
        expected, got = getattr(from_frame, name), getattr(from_matrix, name)
        assert got.features.dtype == np.float32
        np.testing.assert_array_equal(got.features, expected.features, err_msg=name)
        np.testing.assert_array_equal(got.labels, expected.labels, err_msg=name)
        np.testing.assert_array_equal(got.forward_returns, expected.forward_returns)
        pd.testing.assert_series_equal(got.timestamps, expected.timestamps)
    assert from_matrix.processor.to_dict() == from_frame.processor.to_dict()
    assert (from_matrix.rows, from_matrix.first_timestamp, from_matrix.last_timestamp) == (
        from_frame.rows,
        from_frame.first_timestamp,
        from_frame.last_timestamp,
    )
    assert from_matrix.split == from_frame.split


def test_a_feature_matrix_gives_the_segments_and_processor_a_frame_of_the_same_values_gives():
    features, close, timestamps = _values()
    from_frame = prepare_segments(_frame(features, close, timestamps), symbol="BTC")
    train_gaps = np.diff(from_frame.train.timestamps.to_numpy()).max()
    assert train_gaps > np.timedelta64(1, "m"), "rows dropped inside the training segment"
    from_matrix = prepare_segments(FeatureMatrix(features, close, timestamps), symbol="BTC")
    _assert_same(from_frame, from_matrix)


def test_an_earlier_fold_and_a_given_processor_give_the_same_segments_from_a_feature_matrix():
    features, close, timestamps = _values()
    frame = _frame(features, close, timestamps)
    fitted = prepare_segments(frame, symbol="BTC").processor
    fold = fold_splits(ROWS, 3, DEFAULT_HORIZON)[0]
    reached = fold.test.stop + DEFAULT_HORIZON
    _assert_same(
        prepare_segments(frame.iloc[:reached], None, "BTC", fold),
        prepare_segments(
            FeatureMatrix(features[:reached].copy(), close[:reached], timestamps[:reached]),
            None,
            "BTC",
            fold,
        ),
    )
    _assert_same(
        prepare_segments(frame, fitted),
        prepare_segments(FeatureMatrix(features.copy(), close, timestamps), fitted),
    )


def test_the_segments_are_the_feature_matrix_itself_scaled_in_place():
    features, close, timestamps = _values()
    data = prepare_segments(FeatureMatrix(features, close, timestamps), symbol="BTC")
    for segment in (data.train, data.validation, data.test):
        assert np.shares_memory(segment.features, features)
        assert segment.features.flags.c_contiguous  # torch takes it without a copy
    assert abs(float(data.train.features.mean())) < 0.01  # scaled, not the raw mean of 3


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, c, t: (f.astype(np.float64), c, t), "float64"),
        (lambda f, c, t: (f[:, :71].copy(), c, t), "expected float32 \\(rows, 72\\)"),
        (lambda f, c, t: (np.asfortranarray(f), c, t), "C-contiguous"),
        (lambda f, c, t: (f, c[:-1], t), "needs as many closes and timestamps"),
    ],
)
def test_a_feature_matrix_that_cannot_be_scaled_in_place_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        FeatureMatrix(*change(*_values(rows=500)))


def test_the_trainer_reads_a_features_file_into_a_feature_matrix(tmp_path):
    features, close, timestamps = _values(rows=3_000)
    path = tmp_path / "BTC_features.parquet"
    frame = _frame(features, close, timestamps)
    for name in ("open", "high", "low", "volume"):  # columns training does not read
        frame.insert(2, name, 1.0)
    assert set(frame.columns) == set(FEATURES_DATASET_COLUMNS)
    frame.to_parquet(path, index=False)
    whole, first = read_features_dataset(path), read_features_dataset(path, rows=1_000)
    np.testing.assert_array_equal(whole.features, features)
    np.testing.assert_array_equal(whole.close, close)
    pd.testing.assert_series_equal(whole.timestamps, timestamps)
    np.testing.assert_array_equal(first.features, features[:1_000])
    assert len(first.close) == len(first.timestamps) == 1_000
