import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from v8_model import features as features_module
from v8_model.defaults import LONGEST_FEATURE_WINDOW
from v8_model.features import (
    FEATURE_NAMES,
    FEATURES_DATASET_COLUMNS,
    WARMUP_ROWS,
    build_features_dataset,
    compute_features,
)
from v8_model.synthetic import generate_candles

DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"
PRICE_COLUMNS = ["open", "high", "low", "close"]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    """The default synthetic market: 30 days of BTC."""
    return generate_candles("BTC", minutes=60 * 24 * 30, seed=0)


@pytest.fixture(scope="module")
def features(candles: pd.DataFrame) -> pd.DataFrame:
    return compute_features(candles)


def _matrix(features: pd.DataFrame) -> np.ndarray:
    return features[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def _flat_candles(n: int, price: float, volume: float, start: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=n, freq="1min"),
            **{column: np.full(n, price) for column in PRICE_COLUMNS},
            "volume": np.full(n, volume),
        }
    )


def _documented_features() -> list[dict[str, str]]:
    """The rows of the table in docs/features.md, as {column header: cell}."""
    table = [line for line in DOCS.read_text().splitlines() if line.startswith("|")]
    # Cells are split on pipes that are not escaped (formulas write |x| as \|x\|).
    split = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    header, _separator, *rows = split
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_names_order_dtypes_and_warmup(candles, features):
    assert len(FEATURE_NAMES) == 72 == len(set(FEATURE_NAMES))
    assert list(features.columns) == ["timestamp", *FEATURE_NAMES]
    assert all(features[name].dtype == np.float32 for name in FEATURE_NAMES)
    assert np.isfinite(_matrix(features)).all(), "NaN/Inf in the features"

    # Warm-up rows are dropped, not back-filled: output row i is candle row i + WARMUP_ROWS.
    assert WARMUP_ROWS == LONGEST_FEATURE_WINDOW
    assert len(features) == len(candles) - WARMUP_ROWS
    assert features["timestamp"].iloc[0] == candles["timestamp"].iloc[WARMUP_ROWS]
    pd.testing.assert_series_equal(
        features["timestamp"],
        candles["timestamp"].iloc[WARMUP_ROWS:].reset_index(drop=True),
    )
    assert isinstance(features.index, pd.RangeIndex) and features.index.start == 0


def test_features_dataset_layout(candles, features):
    dataset = build_features_dataset(candles)
    assert list(dataset.columns) == list(FEATURES_DATASET_COLUMNS)
    kept = candles.iloc[WARMUP_ROWS:].reset_index(drop=True)
    for column in ["open", "high", "low", "close", "volume"]:
        assert dataset[column].dtype == np.float64
        np.testing.assert_array_equal(dataset[column].to_numpy(), kept[column].to_numpy())
    pd.testing.assert_frame_equal(dataset[["timestamp", *FEATURE_NAMES]], features)


def test_scale_invariance(candles, features):
    scaled = candles.copy()
    scaled[PRICE_COLUMNS] *= 1000.0
    scaled["volume"] *= 7.0
    # Relative 1e-4 covers float32 storage and float64 rounding, which differs between the two
    # scales by ~1e-12 absolute; entries that are 0 up to that rounding (a close equal to its
    # SMA, two nearly equal EMAs) cannot be compared relatively, hence atol 1e-8 — far below any
    # feature's spread, and a price or volume level leaking in would differ by orders more.
    np.testing.assert_allclose(
        _matrix(compute_features(scaled)), _matrix(features), rtol=1e-4, atol=1e-8
    )


def test_causal_prefixes_give_identical_rows(candles, features):
    # Prefix lengths cover the shortest allowed input and the price-chunk boundaries (4096).
    for n_candles in (WARMUP_ROWS + 1, 1_000, 4_300, 9_000):
        prefix = compute_features(candles.iloc[:n_candles])
        pd.testing.assert_frame_equal(prefix, features.iloc[: n_candles - WARMUP_ROWS])


def test_no_two_features_nearly_identical(features):
    matrix = _matrix(features)
    assert (matrix.std(axis=0) > 0).all(), "a constant column has no correlation to check"
    correlation = np.abs(np.corrcoef(matrix, rowvar=False))
    np.fill_diagonal(correlation, 0.0)
    i, j = np.unravel_index(np.argmax(correlation), correlation.shape)
    assert correlation[i, j] <= 0.995, (
        f"{FEATURE_NAMES[i]} and {FEATURE_NAMES[j]} are nearly identical: "
        f"|r| = {correlation[i, j]:.4f}"
    )


def test_flat_market_gives_documented_neutral_values():
    # Flat from the first candle with no volume: every zero-denominator rule applies.
    flat = _flat_candles(600, price=123.45, volume=0.0, start=pd.Timestamp("2024-03-01", tz="UTC"))
    result = compute_features(flat)
    assert np.isfinite(_matrix(result)).all()
    neutral = {}
    for row in _documented_features():
        value = re.match(r"`([-\d.]+)`", row["neutral value"])
        if value:
            neutral[row["name"].strip("`")] = float(value.group(1))
    assert len(neutral) > 30, "the docs table should list the neutral values"
    for name, value in neutral.items():
        np.testing.assert_allclose(result[name], value, atol=1e-6, err_msg=name)


def test_flat_stretches_stay_finite_and_bounded():
    start = pd.Timestamp("2024-01-01", tz="UTC")
    moving = generate_candles("ETH", minutes=3_000, seed=5)
    last_close = moving["close"].iloc[-1]
    resumed = generate_candles("ETH", minutes=3_000, seed=6)
    resumed[PRICE_COLUMNS] *= last_close / resumed["open"].iloc[0]
    parts = [
        moving,
        # Long enough for the ATR to decay to 0 (about 10,000 bars of (13/14)^k).
        _flat_candles(12_000, last_close, volume=0.0, start=start),
        resumed,
        _flat_candles(500, resumed["close"].iloc[-1], volume=2.5, start=start),
    ]
    candles = pd.concat(parts, ignore_index=True)
    candles["timestamp"] = pd.date_range(start, periods=len(candles), freq="1min")
    matrix = _matrix(compute_features(candles))
    assert np.isfinite(matrix).all()
    # Every feature is bounded by its window length (price_vs_sma_200: 199) or by 100
    # (oscillators); a blown-up ratio of rounding noise would be orders larger.
    worst = np.abs(matrix).max(axis=0)
    assert worst.max() < 1_000, f"{FEATURE_NAMES[int(np.argmax(worst))]} reaches {worst.max():g}"


def test_matches_straightforward_pandas(monkeypatch):
    # Short chunks so that the chunked windowed sums cross several chunk boundaries.
    monkeypatch.setattr(features_module, "_CHUNK_ROWS", 700)
    monkeypatch.setattr(features_module, "_PRICE_CHUNK_ROWS", 300)
    candles = generate_candles("SOL", minutes=3_000, seed=2)
    result = compute_features(candles)
    high, low, close, volume = (candles[c] for c in ("high", "low", "close", "volume"))
    log_return = np.log(close).diff()
    true_range = np.maximum(high, close.shift()) - np.minimum(low, close.shift())
    true_range.iloc[0] = high.iloc[0] - low.iloc[0]
    atr_14 = true_range.ewm(alpha=1 / 14).mean()
    gains, losses = close.diff().clip(lower=0), (-close.diff()).clip(lower=0)
    rsi_21 = 100 * gains.rolling(21).sum() / (gains + losses).rolling(21).sum()
    macd_line = (close.ewm(span=12).mean() - close.ewm(span=26).mean()) / atr_14
    sigma_50 = close.rolling(50).std(ddof=0)
    low_21, high_21 = low.rolling(21).min(), high.rolling(21).max()
    returns_100 = sliding_window_view(log_return.to_numpy()[1:], 100)
    bars_since_high = sliding_window_view(high.to_numpy(), 26)[:, ::-1].argmax(axis=1)
    typical_volume = ((high + low + close) / 3 * volume).rolling(100).sum()
    vwap = typical_volume / volume.rolling(100).sum()
    expected = {
        "price_vs_sma_50": (close - close.rolling(50).mean()) / true_range.rolling(50).mean(),
        "price_vs_ema_200": np.log(close / close.ewm(span=200).mean()),
        "rsi_21": rsi_21,
        "macd_signal_12_26_9": macd_line.ewm(span=9).mean(),
        "bb_position_50": (close - close.rolling(50).mean() + 2 * sigma_50) / (4 * sigma_50),
        "atr_14": atr_14 / close,
        "stoch_k_21": 100 * (close - low_21) / (high_21 - low_21),
        "distance_to_high_200": np.log(close / high.rolling(200).max()),
        "distance_to_low_50": np.log(close / low.rolling(50).min()),
        "aroon_up_25": np.r_[np.full(25, np.nan), 100 * (25 - bars_since_high) / 25],
        "volatility_ratio_20_200": log_return.rolling(20).std(ddof=0)
        / log_return.rolling(200).std(ddof=0),
        "return_kurtosis_100": np.r_[np.full(100, np.nan), stats.kurtosis(returns_100, axis=1)],
        "return_skew_100": np.r_[np.full(100, np.nan), stats.skew(returns_100, axis=1)],
        "return_autocorr_100": log_return.rolling(100).corr(log_return.shift()),
        "volume_return_corr_50": volume.rolling(50).corr(log_return.abs()),
        "vwap_distance_100": (close - vwap) / true_range.rolling(100).mean(),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(
            result[name], np.asarray(values)[WARMUP_ROWS:], rtol=1e-4, atol=1e-6, err_msg=name
        )


def test_calendar_features_follow_utc_time(features):
    timestamps = features["timestamp"]
    minute_of_day = timestamps.dt.hour * 60 + timestamps.dt.minute
    minute_of_week = timestamps.dt.day_of_week * 1440 + minute_of_day
    np.testing.assert_allclose(
        features["minute_of_day_sin"], np.sin(2 * np.pi * minute_of_day / 1440), atol=1e-6
    )
    np.testing.assert_allclose(
        features["day_of_week_cos"], np.cos(2 * np.pi * minute_of_week / 10080), atol=1e-6
    )


def test_timestamp_resolution_does_not_matter(candles, features):
    in_seconds = candles.assign(timestamp=candles["timestamp"].dt.as_unit("s"))
    pd.testing.assert_frame_equal(
        compute_features(in_seconds).drop(columns="timestamp"),
        features.drop(columns="timestamp"),
    )


@pytest.mark.parametrize("missing", ["timestamp", "close", "volume"])
def test_missing_column_is_named(candles, missing):
    with pytest.raises(ValueError, match=f"missing column.*'{missing}'"):
        compute_features(candles.drop(columns=missing))


def test_too_few_rows_says_how_many_are_needed(candles):
    with pytest.raises(ValueError, match=f"at least {WARMUP_ROWS + 1} candle rows.*got 200"):
        compute_features(candles.iloc[:WARMUP_ROWS])
    assert len(compute_features(candles.iloc[: WARMUP_ROWS + 1])) == 1


def test_docs_table_lists_every_feature_in_order():
    rows = _documented_features()
    assert [row["name"].strip("`") for row in rows] == list(FEATURE_NAMES)
    for row in rows:
        assert all(row.values()), f"empty cell in the docs row {row}"
