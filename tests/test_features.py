import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from features_reference import reference_features
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from v8_model.data import features as features_module
from v8_model.data.features import (
    FEATURE_NAMES,
    FEATURES_DATASET_COLUMNS,
    WARMUP_ROWS,
    build_features_dataset,
    compute_features,
)
from v8_model.data.segments import prepare_segments
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import LONGEST_FEATURE_WINDOW
from v8_model.evaluation.gates import gate_feature_normalization

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


@pytest.mark.parametrize("chunk_rows", [None, (700, 300)], ids=["default-chunks", "short-chunks"])
def test_matches_the_reference_implementation(monkeypatch, chunk_rows):
    # Held-out candles (a symbol and seed no other test uses) with a flat, volume-less stretch
    # spliced in, so that the neutral values and exact-zero window sums are compared too; short
    # chunks make the windowed sums restart many times.
    if chunk_rows is not None:
        monkeypatch.setattr(features_module, "_CHUNK_ROWS", chunk_rows[0])
        monkeypatch.setattr(features_module, "_PRICE_CHUNK_ROWS", chunk_rows[1])
    candles = generate_candles("XRP", minutes=12_000, seed=23, signal=0.3)
    flat = slice(5_000, 5_400)
    candles.loc[candles.index[flat], PRICE_COLUMNS] = candles["close"].iloc[flat.start - 1]
    candles.loc[candles.index[flat], "volume"] = 0.0
    with reference_features():
        expected = compute_features(candles)
    result = compute_features(candles)
    pd.testing.assert_series_equal(result["timestamp"], expected["timestamp"])
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)


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
    square_return = log_return**2
    true_range = np.maximum(high, close.shift()) - np.minimum(low, close.shift())
    true_range.iloc[0] = high.iloc[0] - low.iloc[0]
    atr_14 = true_range.ewm(alpha=1 / 14).mean()
    mean_range = {window: true_range.rolling(window).mean() for window in (20, 50, 200)}
    return_scale = np.sqrt(square_return.ewm(span=200).mean())
    sigma_200 = log_return.rolling(200).std(ddof=0)
    gains, losses = close.diff().clip(lower=0), (-close.diff()).clip(lower=0)
    rsi_21 = 100 * gains.rolling(21).sum() / (gains + losses).rolling(21).sum()
    macd_line = (close.ewm(span=12).mean() - close.ewm(span=26).mean()) / atr_14
    macd_5_35 = np.log(close.ewm(span=5).mean() / close.ewm(span=35).mean()) / return_scale
    sigma_50 = close.rolling(50).std(ddof=0)
    low_21, high_21 = low.rolling(21).min(), high.rolling(21).max()
    returns_100 = sliding_window_view(log_return.to_numpy()[1:], 100)
    bars_since_high = sliding_window_view(high.to_numpy(), 26)[:, ::-1].argmax(axis=1)
    typical_volume = ((high + low + close) / 3 * volume).rolling(100).sum()
    vwap = typical_volume / volume.rolling(100).sum()
    close_location = ((close - low) - (high - close)) / (high - low)
    expected = {
        "log_return": log_return * close / atr_14,
        "log_return_lag_2": (log_return * close / atr_14).shift(2),
        "price_vs_sma_50": (close - close.rolling(50).mean()) / mean_range[50],
        "price_vs_ema_200": np.log(close / close.ewm(span=200).mean()) / return_scale,
        "rsi_21": rsi_21,
        "macd_signal_12_26_9": macd_line.ewm(span=9).mean(),
        "macd_hist_5_35_9": macd_5_35 - macd_5_35.ewm(span=9).mean(),
        "bb_position_50": (close - close.rolling(50).mean() + 2 * sigma_50) / (4 * sigma_50),
        "bb_width_20": 4 * close.rolling(20).std(ddof=0) / mean_range[20],
        "atr_14": atr_14 / true_range.ewm(span=200).mean(),
        "stoch_k_21": 100 * (close - low_21) / (high_21 - low_21),
        "distance_to_high_200": (close - high.rolling(200).max()) / mean_range[200],
        "distance_to_low_50": (close - low.rolling(50).min()) / mean_range[50],
        "aroon_up_25": np.r_[np.full(25, np.nan), 100 * (25 - bars_since_high) / 25],
        "roc_20": np.log(close).diff(20) / return_scale,
        "volatility_20": log_return.rolling(20).std(ddof=0) / sigma_200,
        "downside_volatility_share_50": square_return.where(log_return < 0, 0.0).rolling(50).sum()
        / square_return.rolling(50).sum(),
        "bar_range": (high - low) / true_range.ewm(span=200).mean(),
        "trend_tstat_200": np.log(close).diff(200) / (sigma_200 * np.sqrt(200)),
        "return_kurtosis_100": np.r_[np.full(100, np.nan), stats.kurtosis(returns_100, axis=1)],
        "return_skew_100": np.r_[np.full(100, np.nan), stats.skew(returns_100, axis=1)],
        "return_autocorr_100": log_return.rolling(100).corr(log_return.shift()),
        "chaikin_money_flow_20": (close_location * volume).rolling(20).sum()
        / volume.rolling(20).sum(),
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


# Quality gate 1 on 60-day synthetic markets: the StandardScaler is fitted on the training segment
# (42 days) and must normalise the test segment (9 days). The synthetic volatility clusters
# (log-volatility AR(1), half-life about 12 hours), so the test segment sits in another
# volatility regime than the training one: a feature measuring the volatility level, or a price
# move in raw log units, fails here (atr_14 as ATR / close drifted by 0.4 scaled units, and the
# gate failed on 3 of these 8 BTC seeds).
GATE_1_SEEDS = range(1, 9)


@pytest.fixture(scope="module")
def gate_1_results() -> dict[tuple[str, int], tuple]:
    """(gate 1 result, per-feature test means) by (symbol, seed), planted signal 0.3."""
    results = {}
    for symbol in ("BTC", "ETH", "SOL"):
        for seed in GATE_1_SEEDS:
            candles = generate_candles(symbol, minutes=60 * 1440, seed=seed, signal=0.3)
            dataset = build_features_dataset(candles)
            scaled_test = prepare_segments(dataset, symbol=symbol).test.features
            results[symbol, seed] = (
                gate_feature_normalization(scaled_test),
                scaled_test.mean(axis=0, dtype=np.float64),
            )
    return results


def test_scaled_test_segment_passes_gate_1(gate_1_results):
    for symbol in ("BTC", "ETH"):
        values = {seed: gate_1_results[symbol, seed][0].value for seed in GATE_1_SEEDS}
        passed = [seed for seed, value in values.items() if value < 0.1]
        assert len(passed) >= 7, f"{symbol}: gate 1 passes for seeds {passed} only: {values}"
    # The spread is what volatility regimes move: it must hold for every symbol and seed. SOL's
    # planted trend moves some 9-day test windows by a lot (seed 3: -1.8 in log price), so its
    # trend features have a real non-zero test mean and the overall mean is not held here.
    for (symbol, seed), (gate, _) in gate_1_results.items():
        assert abs(gate.details["std"] - 1.0) < 0.1, (symbol, seed, gate.details)


def test_no_feature_drifts_with_the_volatility_regime(gate_1_results):
    # The day-of-week phases' test mean is a calendar fact (9 days cover 1.3 weeks), the same
    # for every seed; every other feature's test mean must stay near 0 on average over seeds.
    for symbol in ("BTC", "ETH"):
        means = np.array([gate_1_results[symbol, seed][1] for seed in GATE_1_SEEDS])
        drift = dict(zip(FEATURE_NAMES, np.abs(means).mean(axis=0), strict=True))
        drifting = {
            name: round(float(value), 3)
            for name, value in drift.items()
            if value >= 0.2 and not name.startswith("day_of_week")
        }
        assert not drifting, f"{symbol}: scaled test means drift: {drifting}"
