"""The 72 model features: scale-free, causal, computed from 1-minute OHLCV candles.

Every feature is a ratio, a log ratio, a bounded oscillator or a calendar phase, so multiplying
all prices by one constant and the volume by another leaves it unchanged, and a scaler fitted on
last year still fits this year. Every look-back is trailing (windowed sums, running extremes,
recursive EMAs), so the feature at row t reads candles 0..t only. The first `WARMUP_ROWS` rows,
whose windows are incomplete, are dropped, never back-filled.

Where a denominator can be exactly zero on real data (a flat candle has high == low, a flat
stretch has no movement, a quiet one has no volume), the feature takes a documented neutral
value instead of NaN/Inf. docs/features.md has one table with every feature's formula, window
and neutral value; keep it in step with this file.

No feature measures a volatility level or a price move in raw log units. Volatility clusters
(on crypto as on the synthetic market), so such a feature's spread follows the volatility regime
and a scaler fitted on one regime does not normalise the next. Price moves are therefore
expressed in units of a trailing volatility, and volatility levels relative to another one: ATR
14 and the bar's range to the EMA-200 true range, sigma 20 and 50 to sigma 200, the Bollinger
width to the window's mean true range. Look-backs stay within 200 bars (EMA spans within 200).

Units are chosen so that no two features carry the same information. For constant volatility
the return kernels of "price vs SMA n" and "price vs EMA n" overlap by 98%, Wilder's RSI 30
overlaps "price vs EMA 50" by 99.7%, and MACD 12/26 overlaps MACD 5/35 by 98.7%. So the two
near-duplicate families of each pair use different volatility units: SMA, VWAP and channel
distances are in units of the window's mean true range, MACD 12/26/9 and log returns in ATR-14
units (range terms); EMA distances, MACD 5/35/9 and rates of change are in units of the return
scale, the EMA-200 RMS of log returns (return terms). RSI is Cutler's (plain sums over the
window, a flat kernel) rather than Wilder's (an EMA kernel). Short against long windows and true
ranges against squared fat-tailed returns then keep the pairs apart.

Computation is float64; the output is float32. Element-wise terms are numpy; the windowed sums,
EMAs, running extremes and zero-guarded divisions are the vectorised primitives of
`v8_model.data.rolling` (numpy, and `scipy.signal.lfilter` for the EMAs). Two groups of features
that share only their inputs (`_Bases`) run on two threads at once: numpy's and scipy's loops
release the GIL. Within each group an intermediate array is dropped as soon as no later feature
reads it, so the two groups together peak lower than the single sequence did. The input is
expected to satisfy the candle schema of `v8_model.data.candles` (positive finite prices,
non-negative finite volume).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.data import rolling
from v8_model.data.candles import CANDLE_COLUMNS
from v8_model.defaults import LONGEST_FEATURE_WINDOW, MINUTES_PER_DAY

OHLCV_COLUMNS: tuple[str, ...] = CANDLE_COLUMNS[1:]

# Output row i is candle row i + WARMUP_ROWS. The longest windows (SMA 200, the 200-bar high and
# low, the volatility of 200 returns, which needs 201 closes) are all complete at candle row 200.
WARMUP_ROWS = LONGEST_FEATURE_WINDOW

FEATURE_NAMES: tuple[str, ...] = (
    "log_return",
    "log_return_lag_1",
    "log_return_lag_2",
    "log_return_lag_3",
    "volume_ratio_20",
    "volume_ratio_20_lag_1",
    "volume_ratio_20_lag_2",
    "volume_ratio_20_lag_3",
    "price_vs_sma_5",
    "price_vs_sma_10",
    "price_vs_sma_20",
    "price_vs_sma_50",
    "price_vs_sma_200",
    "price_vs_ema_5",
    "price_vs_ema_10",
    "price_vs_ema_20",
    "price_vs_ema_50",
    "price_vs_ema_200",
    "rsi_14",
    "rsi_21",
    "rsi_30",
    "macd_12_26",
    "macd_signal_12_26_9",
    "macd_hist_12_26_9",
    "macd_5_35",
    "macd_signal_5_35_9",
    "macd_hist_5_35_9",
    "bb_position_20",
    "bb_width_20",
    "bb_position_50",
    "bb_width_50",
    "atr_14",
    "stoch_k_14",
    "stoch_d_14",
    "stoch_k_21",
    "stoch_d_21",
    "distance_to_high_20",
    "distance_to_low_20",
    "distance_to_high_50",
    "distance_to_low_50",
    "distance_to_high_200",
    "distance_to_low_200",
    "aroon_up_25",
    "aroon_down_25",
    "roc_5",
    "roc_10",
    "roc_20",
    "roc_50",
    "volatility_20",
    "volatility_50",
    "downside_volatility_share_50",
    "atr_ratio_14_50",
    "true_range_ratio",
    "bar_range",
    "parkinson_ratio_50",
    "candle_body",
    "candle_upper_wick",
    "candle_lower_wick",
    "minute_of_day_sin",
    "minute_of_day_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "trend_tstat_200",
    "up_bar_share_50",
    "return_skew_100",
    "return_kurtosis_100",
    "return_autocorr_100",
    "volume_trend_10_100",
    "signed_volume_share_20",
    "chaikin_money_flow_20",
    "volume_return_corr_50",
    "vwap_distance_100",
)

FEATURES_DATASET_COLUMNS: tuple[str, ...] = ("timestamp", *OHLCV_COLUMNS, *FEATURE_NAMES)

# Windowed sums restart their cumulative sum every _CHUNK_ROWS rows: the rounding error stays
# that of a chunk-long sum instead of growing with the series, and a window of zeros sums to
# exactly zero, which the neutral values rely on.
_CHUNK_ROWS = 1 << 16
# Price-level sums use shorter chunks: their running totals are large, so rounding grows faster.
_PRICE_CHUNK_ROWS = 1 << 12
# Smoothing of the slow volatility scales: the EMA 200's, so they forget as fast as it does.
_SLOW_ALPHA = 2 / (200 + 1)
# The smallest non-zero return scale, far below any real 1-minute volatility or tick.
_RETURN_SCALE_FLOOR = 1e-9
_BOLLINGER_WINDOWS = (20, 50)
_ATR_FLOOR = 1e-9  # times close: the smallest divisor of the MACD 12/26/9 family
_MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
# 1970-01-01 was a Thursday: shifting by three days puts minute 0 of the week on Monday 00:00.
_EPOCH_MINUTE_OF_WEEK_OFFSET = 3 * MINUTES_PER_DAY


def compute_features(candles: pd.DataFrame) -> pd.DataFrame:
    """`timestamp` plus the FEATURE_NAMES columns (float32), one row per candle from WARMUP_ROWS on.

    Raises ValueError naming the missing columns when a candle column is missing, and saying
    how many rows are needed when there are WARMUP_ROWS rows or fewer. The index is reset.
    EMA-based features have infinite memory: give at least ~1,000 candles of history when the
    rows must match features computed from a longer series (e.g. at inference).
    """
    _check_candles(candles)
    n_rows = len(candles) - WARMUP_ROWS
    # Column-major, so each feature is written contiguously and pandas takes it without a copy.
    matrix = np.empty((n_rows, len(FEATURE_NAMES)), dtype=np.float32, order="F")
    column_of = {name: position for position, name in enumerate(FEATURE_NAMES)}
    computed: list[str] = []

    def write(group: Iterator[tuple[str, np.ndarray]]) -> None:
        for name, values in group:
            matrix[:, column_of[name]] = values[WARMUP_ROWS:]
            computed.append(name)

    bases = _Bases.from_candles(candles)
    _in_parallel(
        write, _trend_features(bases), _volatility_and_flow_features(bases, candles["timestamp"])
    )
    del bases
    if sorted(computed) != sorted(FEATURE_NAMES):  # a column left out holds uninitialised memory
        raise RuntimeError("the computed features do not match FEATURE_NAMES one to one")
    features = pd.DataFrame(matrix, columns=list(FEATURE_NAMES), copy=False)
    timestamps = candles["timestamp"].iloc[WARMUP_ROWS:].reset_index(drop=True)
    features.insert(0, "timestamp", timestamps)
    return features


def build_features_dataset(candles: pd.DataFrame) -> pd.DataFrame:
    """The `{SYMBOL}_features.parquet` layout: FEATURES_DATASET_COLUMNS, one row per kept candle.

    OHLCV of the kept rows stay float64 (labels are computed from close); features are float32.
    """
    features = compute_features(candles)
    kept = candles.iloc[WARMUP_ROWS:]
    for position, column in enumerate(OHLCV_COLUMNS, start=1):
        features.insert(position, column, kept[column].to_numpy(dtype=np.float64))
    return features


def _in_parallel(
    write: Callable[[Iterator[tuple[str, np.ndarray]]], None],
    *groups: Iterator[tuple[str, np.ndarray]],
) -> None:
    """write(group) for every group at once, the first on this thread, each other on its own.

    numpy's and scipy's loops release the GIL, so groups that share only their inputs use as
    many cores; each writes its own columns. Freed arrays are reused meanwhile (`heap`).
    """
    with ThreadPoolExecutor(len(groups) - 1) as threads:
        others = [threads.submit(write, group) for group in groups[1:]]
        write(groups[0])
        for other in others:
            other.result()


def _check_candles(candles: pd.DataFrame) -> None:
    missing = [column for column in CANDLE_COLUMNS if column not in candles.columns]
    if missing:
        raise ValueError(
            f"candles are missing column(s) {', '.join(map(repr, missing))}; "
            f"features need {', '.join(CANDLE_COLUMNS)}"
        )
    if len(candles) <= WARMUP_ROWS:
        raise ValueError(
            f"features need at least {WARMUP_ROWS + 1} candle rows ({WARMUP_ROWS} warm-up rows "
            f"for the longest look-back, then one row of output), got {len(candles)}"
        )


@dataclass(frozen=True)
class _Bases:
    """What both feature groups read: the candles as float64 and the volatility units (see the
    module docstring), each computed once. Values are NaN where a window is incomplete, so a
    window longer than the warm-up would surface as NaN in the output instead of passing
    unnoticed."""

    open_: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    log_close: np.ndarray
    log_return: np.ndarray
    true_range: np.ndarray
    atr_14: np.ndarray
    # The EMA-200 RMS of log returns, the unit of the return terms, and the EMA-200 true range,
    # the reference of ATR 14 and bar range.
    return_scale: np.ndarray
    range_scale: np.ndarray

    @classmethod
    def from_candles(cls, candles: pd.DataFrame) -> _Bases:
        open_, high, low, close, volume = (
            candles[column].to_numpy(dtype=np.float64) for column in OHLCV_COLUMNS
        )
        log_close = np.log(close)
        log_return = _diff(log_close, 1)
        # Wilder's true range; the first bar has no previous close, so its range is high - low.
        previous_close = _lag(close, 1)
        true_range = np.fmax(high, previous_close) - np.fmin(low, previous_close)
        del previous_close
        return cls(
            open_=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            log_close=log_close,
            log_return=log_return,
            true_range=true_range,
            atr_14=_ema(true_range, alpha=1 / 14),
            return_scale=_return_scale(log_return),
            range_scale=_ema(true_range, alpha=_SLOW_ALPHA),
        )


def _trend_features(bases: _Bases) -> Iterator[tuple[str, np.ndarray]]:
    """Returns, volume ratios, moving averages, oscillators and price channels.

    Each family is a generator of its own, so its intermediate arrays are freed as soon as it
    is done (peak memory).
    """
    close, atr_14, return_scale = bases.close, bases.atr_14, bases.return_scale
    # |r| c <= TR max(1, c / c_-1) and the ATR includes TR / 14, so |value| <= 14 max(1, c / c_-1).
    normalised_return = _divide(bases.log_return * close, atr_14, neutral=0.0)
    yield "log_return", normalised_return
    for lag in (1, 2, 3):
        yield f"log_return_lag_{lag}", _lag(normalised_return, lag)
    del normalised_return
    yield from _volume_ratios(bases.volume)
    # Windowed sums of the true range: n times the mean true range of the last n bars.
    range_sums = {window: _rolling_sum(bases.true_range, window) for window in (5, 10, 20, 50, 200)}
    yield from _moving_averages(bases, range_sums)
    del range_sums[5], range_sums[10]  # the channels need 20, 50 and 200 only
    yield from _price_channels(bases.high, bases.low, close, range_sums)
    del range_sums
    yield "atr_14", _divide(atr_14, bases.range_scale, neutral=1.0)
    for window in (5, 10, 20, 50):
        yield f"roc_{window}", _divide(_diff(bases.log_close, window), return_scale, neutral=0.0)


def _volatility_and_flow_features(
    bases: _Bases, timestamps: pd.Series
) -> Iterator[tuple[str, np.ndarray]]:
    """Volatilities, candle shapes, calendar, return statistics and volume flow."""
    high, low, close, log_return = bases.high, bases.low, bases.close, bases.log_return
    return_mean_50 = _rolling_mean(log_return, 50)
    return_mean_square_50 = _rolling_mean(log_return * log_return, 50)
    volatility_50 = np.sqrt(np.maximum(return_mean_square_50 - return_mean_50**2, 0.0))
    del return_mean_50
    volatility_200 = _rolling_std(log_return, 200)
    yield from _volatilities(
        high,
        low,
        log_return,
        volatility_50,
        volatility_200,
        bases.true_range,
        bases.atr_14,
        bases.range_scale,
    )
    del volatility_50
    # The t-statistic of the 200-bar drift.
    roc_200 = _diff(bases.log_close, 200)
    yield "trend_tstat_200", _divide(roc_200, volatility_200 * np.sqrt(200.0), neutral=0.0)
    del roc_200, volatility_200
    yield from _candle_shapes(bases.open_, high, low, close)
    yield from _calendar(timestamps)
    yield from _return_statistics(log_return)
    yield from _volume_flow(
        high, low, close, bases.volume, log_return, return_mean_square_50, bases.true_range
    )


def _return_scale(log_return: np.ndarray) -> np.ndarray:
    """RMS of the log returns so far, EMA-200 weighted, floored at _RETURN_SCALE_FLOOR unless 0.

    0 (no non-zero return yet, and on the first bar, which has no return) gives the price terms
    their neutral value; the MACD 5/35 signal line is an EMA of them and must not start from NaN.
    On a long flat stretch the RMS decays towards 0 while the rounding noise of an EMA
    difference does not: the floor keeps that noise from being blown up.
    """
    scale = np.zeros_like(log_return)
    scale[1:] = np.sqrt(_ema(log_return[1:] * log_return[1:], alpha=_SLOW_ALPHA))
    return np.where(scale > 0, np.maximum(scale, _RETURN_SCALE_FLOOR), 0.0)


def _volume_ratios(volume: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    volume_ratio = _divide(volume, _rolling_mean(volume, 20), neutral=1.0)
    yield "volume_ratio_20", volume_ratio
    for lag in (1, 2, 3):
        yield f"volume_ratio_20_lag_{lag}", _lag(volume_ratio, lag)


def _moving_averages(
    bases: _Bases, range_sums: dict[int, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """Price vs SMA and EMA, Bollinger bands, RSI and MACD.

    Each average is dropped as soon as no later feature reads it (peak memory: the other group
    of features runs at the same time).
    """
    close, log_close, return_scale = bases.close, bases.log_close, bases.return_scale
    abs_return = np.abs(bases.log_return)
    for window in (5, 10, 20, 50, 200):
        range_sum = range_sums[window]
        if window in _BOLLINGER_WINDOWS:
            average, sigma = _rolling_price_moments(close, window)
            yield from _bollinger_bands(window, close, abs_return, average, sigma, range_sum)
            del sigma
        else:  # the standard deviation is for the Bollinger bands only
            average = _rolling_price_mean(close, window)
        # In units of the window's mean true range: |close - SMA| <= (window - 1) mean TR, so the
        # value stays bounded however quiet the market gets, and a flat window gives 0.
        distance = _divide(window * (close - average), range_sum, neutral=0.0)
        del average, range_sum
        yield f"price_vs_sma_{window}", distance
    del abs_return, distance

    for span in (5, 10, 20, 50, 200):
        ema = _ema(close, alpha=2 / (span + 1))
        yield f"price_vs_ema_{span}", _divide(log_close - np.log(ema), return_scale, neutral=0.0)
        if span == 5:
            ema_5 = ema  # the MACD 5/35's fast line
    del ema

    abs_change = np.abs(_diff(close, 1))
    for window in (14, 21, 30):
        # Cutler's RSI 100 G / (G + L), G and L the sums of gains and losses over the window,
        # is 50 + 50 (close_t - close_t-n) / sum |change|.
        movement = _rolling_sum(abs_change, window)
        rsi = 50.0 + 50.0 * _divide(_diff(close, window), movement, neutral=0.0)
        yield f"rsi_{window}", rsi
    del abs_change, movement, rsi

    # |EMA12 - EMA26| is bounded by a multiple of an ATR decaying about as fast (1/14 vs 2/27 per
    # bar), but its rounding noise is not: the floor keeps long flat stretches, on which the ATR
    # decays to 0, from blowing that noise up.
    ema_difference = _ema(close, alpha=2 / (12 + 1)) - _ema(close, alpha=2 / (26 + 1))
    yield from _macd("12_26", ema_difference / np.maximum(bases.atr_14, _ATR_FLOOR * close))
    del ema_difference
    log_ratio = np.log(ema_5 / _ema(close, alpha=2 / (35 + 1)))
    del ema_5
    yield from _macd("5_35", _divide(log_ratio, return_scale, neutral=0.0))


def _bollinger_bands(
    window: int,
    close: np.ndarray,
    abs_return: np.ndarray,
    average: np.ndarray,
    sigma: np.ndarray,
    range_sum: np.ndarray,
) -> Iterator[tuple[str, np.ndarray]]:
    # Sigma is exactly 0 when the window's closes are all equal, i.e. its window - 1 returns are
    # all zero; tested that way because rounding can leave sigma a hair above 0.
    flat = _rolling_sum(abs_return, window - 1) == 0
    position = 0.5 + _divide(close - average, 4.0 * sigma, neutral=0.0, zero=flat)
    del flat
    # |close - mean| / sigma is at most sqrt(window - 1) (Samuelson's inequality): clip the
    # rounding noise of near-flat windows to the range the formula can reach.
    reach = np.sqrt(window - 1) / 4.0
    yield f"bb_position_{window}", np.clip(position, 0.5 - reach, 0.5 + reach)
    del position
    # Bollinger over Keltner width (the "squeeze"): 4 sigma / mean TR <= 4 (window - 1).
    yield f"bb_width_{window}", _divide(4.0 * window * sigma, range_sum, neutral=0.0)


def _macd(name: str, line: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """A MACD line (`name`: its fast and slow spans), its 9-bar signal line and the histogram."""
    signal = _ema(line, alpha=2 / (9 + 1))
    yield f"macd_{name}", line
    yield f"macd_signal_{name}_9", signal
    yield f"macd_hist_{name}_9", line - signal


def _price_channels(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, range_sums: dict[int, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """Stochastic oscillator, distances to the n-bar high and low, Aroon."""
    negative_low = -low  # running maxima of -low are minus the running minima
    for window in (14, 21):
        high_n, low_n = _running_max(high, window), -_running_max(negative_low, window)
        stoch_k = 100.0 * _divide(close - low_n, high_n - low_n, neutral=0.5)
        yield f"stoch_k_{window}", stoch_k
        yield f"stoch_d_{window}", _rolling_mean(stoch_k, 3)
    for window in (20, 50, 200):
        # In units of the window's mean true range: a high lies at most window mean TRs away.
        range_sum = range_sums[window]
        to_high = _divide(window * (close - _running_max(high, window)), range_sum, neutral=0.0)
        yield f"distance_to_high_{window}", to_high
        to_low = _divide(
            window * (close + _running_max(negative_low, window)), range_sum, neutral=0.0
        )
        yield f"distance_to_low_{window}", to_low
    # Aroon 25 looks at the current bar and the 25 before it.
    yield "aroon_up_25", 100.0 * (25 - _bars_since_max(high, 25 + 1)) / 25
    yield "aroon_down_25", 100.0 * (25 - _bars_since_max(negative_low, 25 + 1)) / 25


def _volatilities(
    high: np.ndarray,
    low: np.ndarray,
    log_return: np.ndarray,
    volatility_50: np.ndarray,
    volatility_200: np.ndarray,
    true_range: np.ndarray,
    atr_14: np.ndarray,
    range_scale: np.ndarray,
) -> Iterator[tuple[str, np.ndarray]]:
    volatility_20 = _rolling_std(log_return, 20)
    yield "volatility_20", _divide(volatility_20, volatility_200, neutral=1.0)
    yield "volatility_50", _divide(volatility_50, volatility_200, neutral=1.0)
    del volatility_20
    square_return = log_return * log_return
    down_square_sum = _rolling_sum(np.where(log_return < 0, square_return, 0.0), 50)
    yield (
        "downside_volatility_share_50",
        _divide(down_square_sum, _rolling_sum(square_return, 50), neutral=0.5),
    )
    atr_50 = _ema(true_range, alpha=1 / 50)
    yield "atr_ratio_14_50", _divide(atr_14, atr_50, neutral=1.0)
    # At most 1 / alpha = 14 (the ATR includes this bar); 0 / 0 only on flat bars, hence 0.
    yield "true_range_ratio", _divide(true_range, atr_14, neutral=0.0)
    yield "bar_range", _divide(high - low, range_scale, neutral=0.0)
    log_range = np.log(high / low)
    parkinson_50 = np.sqrt(_rolling_mean(log_range * log_range, 50) / (4.0 * np.log(2.0)))
    yield "parkinson_ratio_50", _divide(parkinson_50, volatility_50, neutral=1.0)


def _candle_shapes(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray
) -> Iterator[tuple[str, np.ndarray]]:
    bar_span = high - low
    yield "candle_body", _divide(close - open_, bar_span, neutral=0.0)
    yield "candle_upper_wick", _divide(high - np.maximum(open_, close), bar_span, neutral=0.0)
    yield "candle_lower_wick", _divide(np.minimum(open_, close) - low, bar_span, neutral=0.0)


def _calendar(timestamps: pd.Series) -> Iterator[tuple[str, np.ndarray]]:
    if timestamps.dt.tz is not None:
        timestamps = timestamps.dt.tz_convert(None)
    minute = timestamps.to_numpy().astype("datetime64[m]").astype(np.int64)
    minute_of_day = minute % MINUTES_PER_DAY
    minute_of_week = (minute + _EPOCH_MINUTE_OF_WEEK_OFFSET) % _MINUTES_PER_WEEK
    del minute
    # A phase takes one of 1,440 (or 10,080) values: sin and cos of each, looked up per row, are
    # the very values the per-row sin and cos would give, at a fraction of the cost.
    for name, position, period in (
        ("minute_of_day", minute_of_day, MINUTES_PER_DAY),
        ("day_of_week", minute_of_week, _MINUTES_PER_WEEK),
    ):
        phase = 2.0 * np.pi * np.arange(period) / period
        yield f"{name}_sin", np.sin(phase)[position]
        yield f"{name}_cos", np.cos(phase)[position]


def _return_statistics(log_return: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    is_up = np.where(np.isnan(log_return), np.nan, log_return > 0)
    yield "up_bar_share_50", _rolling_mean(is_up, 50)
    del is_up

    squared_return = log_return * log_return
    mean = _rolling_mean(log_return, 100)
    variance = np.maximum(_rolling_mean(squared_return, 100) - mean * mean, 0.0)
    mean_cube = _rolling_mean(squared_return * log_return, 100)
    mean_fourth = _rolling_mean(squared_return * squared_return, 100)
    del squared_return
    # Central moments from raw ones, with products: numpy's float ** is ~100 times slower.
    mean_2 = mean * mean
    third = mean_cube - mean * (3.0 * variance + mean_2)
    fourth = mean_fourth - 4.0 * mean * mean_cube + mean_2 * (6.0 * variance + 3.0 * mean_2)
    del mean_cube, mean_fourth, mean_2
    # Clip to the bounds n points can reach (one outlier among equals: skew (n - 2) / sqrt(n - 1),
    # excess kurtosis n - 5 + 1 / (n - 1); two equal halves: excess kurtosis -2) so that the
    # rounding noise of a near-zero variance cannot produce absurd values.
    n = 100
    skew_bound = (n - 2) / np.sqrt(n - 1)
    skew = _divide(third, variance * np.sqrt(variance), neutral=0.0)
    del third
    yield "return_skew_100", np.clip(skew, -skew_bound, skew_bound, out=skew)
    del skew
    kurtosis = _divide(fourth, variance * variance, neutral=3.0) - 3.0
    del fourth
    yield "return_kurtosis_100", np.clip(kurtosis, -2.0, n - 5 + 1 / (n - 1), out=kurtosis)
    del kurtosis

    # Correlation of r_t with r_t-1 over 100 bars; the lagged side's moments are lagged moments.
    lag_product_mean = _rolling_mean(log_return * _lag(log_return, 1), 100)
    covariance = lag_product_mean - mean * _lag(mean, 1)
    del lag_product_mean, mean
    yield "return_autocorr_100", _correlation(covariance, variance * _lag(variance, 1))


def _volume_flow(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    log_return: np.ndarray,
    return_mean_square_50: np.ndarray,
    true_range: np.ndarray,
) -> Iterator[tuple[str, np.ndarray]]:
    volume_sum = {window: _rolling_sum(volume, window) for window in (10, 20, 50, 100)}
    volume_mean_10, volume_mean_100 = volume_sum[10] / 10, volume_sum[100] / 100
    yield (
        "volume_trend_10_100",
        _divide(volume_mean_10 - volume_mean_100, volume_mean_10 + volume_mean_100, neutral=0.0),
    )
    del volume_sum[10], volume_mean_10, volume_mean_100
    signed_volume = _rolling_sum(np.sign(log_return) * volume, 20)
    yield "signed_volume_share_20", _divide(signed_volume, volume_sum[20], neutral=0.0)
    del signed_volume
    # Close location value: +1 at the high, -1 at the low, 0 mid-range or on a flat bar.
    close_location = _divide((close - low) - (high - close), high - low, neutral=0.0)
    money_flow = _rolling_sum(close_location * volume, 20)
    yield "chaikin_money_flow_20", _divide(money_flow, volume_sum[20], neutral=0.0)
    del close_location, money_flow, volume_sum[20]

    abs_return = np.abs(log_return)
    volume_mean_50 = volume_sum[50] / 50
    abs_return_mean_50 = _rolling_mean(abs_return, 50)
    covariance = _rolling_mean(volume * abs_return, 50) - volume_mean_50 * abs_return_mean_50
    volume_variance = np.maximum(_rolling_mean(volume * volume, 50) - volume_mean_50**2, 0.0)
    abs_return_variance = np.maximum(return_mean_square_50 - abs_return_mean_50**2, 0.0)
    del abs_return, volume_sum[50], volume_mean_50, abs_return_mean_50
    yield "volume_return_corr_50", _correlation(covariance, volume_variance * abs_return_variance)
    del covariance, volume_variance, abs_return_variance

    # (close - VWAP) / mean TR = (close V - sum tp v) 100 / (V sum TR), V the window's volume;
    # bounded by 100 like price_vs_sma. No volume means no VWAP: the distance is then neutral.
    typical_price = (high + low + close) / 3.0
    price_volume = _rolling_sum(typical_price * volume, 100)
    yield (
        "vwap_distance_100",
        _divide(
            100 * (close * volume_sum[100] - price_volume),
            volume_sum[100] * _rolling_sum(true_range, 100),
            neutral=0.0,
        ),
    )


def _lag(values: np.ndarray, periods: int) -> np.ndarray:
    lagged = np.empty_like(values)
    lagged[:periods] = np.nan
    lagged[periods:] = values[:-periods]
    return lagged


def _diff(values: np.ndarray, periods: int) -> np.ndarray:
    difference = np.empty_like(values)
    difference[:periods] = np.nan
    np.subtract(values[periods:], values[:-periods], out=difference[periods:])
    return difference


def _divide(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    neutral: float,
    zero: np.ndarray | None = None,
) -> np.ndarray:
    """numerator / denominator, and `neutral` where the denominator is 0 (or where `zero`)."""
    return rolling.divide(numerator, denominator, neutral, zero)


def _correlation(covariance: np.ndarray, variance_product: np.ndarray) -> np.ndarray:
    """Pearson r from covariance and variance product; 0 when either side is constant."""
    correlation = _divide(covariance, np.sqrt(variance_product), neutral=0.0)
    # Rounding on near-constant windows can push |r| a hair past 1.
    return np.clip(correlation, -1.0, 1.0)


def _rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the trailing `window` rows; NaN until the window is past the leading NaNs."""
    return _windowed(values, window, divisor=1.0)


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    return _windowed(values, window, divisor=float(window))


def _windowed(values: np.ndarray, window: int, *, divisor: float) -> np.ndarray:
    return rolling.rolling_sum(values, window, _CHUNK_ROWS, divisor)


def _rolling_std(values: np.ndarray, window: int) -> np.ndarray:
    """Population standard deviation over the trailing window, for near-zero-mean values.

    E[x^2] - E[x]^2 is exact enough for returns and exactly 0 on a window of zero returns; use
    `_rolling_price_moments` for price levels.
    """
    mean = _rolling_mean(values, window)
    return np.sqrt(np.maximum(_rolling_mean(values * values, window) - mean * mean, 0.0))


def _rolling_price_mean(prices: np.ndarray, window: int) -> np.ndarray:
    """Mean of price levels over the trailing window."""
    return rolling.rolling_price_mean(prices, window, _PRICE_CHUNK_ROWS)


def _rolling_price_moments(prices: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of price levels over the trailing window."""
    return rolling.rolling_price_moments(prices, window, _PRICE_CHUNK_ROWS)


def _ema(values: np.ndarray, *, alpha: float) -> np.ndarray:
    """EMA with weights normalised over the available history (pandas' ewm(adjust=True)).

    `values` must hold no NaN. Row k's weights sum to (1 - decay^(k+1)) / alpha, which equals
    1 / alpha to double precision once decay^(k+1) < eps, so only the first rows are rescaled.
    """
    decay = 1.0 - alpha
    average = rolling.first_order_filter(values, alpha, decay)
    n_rescaled = min(len(values), int(np.log(np.finfo(np.float64).eps) / np.log(decay)) + 1)
    average[:n_rescaled] /= 1.0 - decay ** np.arange(1, n_rescaled + 1)
    return average


def _running_max(values: np.ndarray, window: int) -> np.ndarray:
    """Max over the trailing `window` bars; NaN until the window is full."""
    return rolling.running_max(values, window)


def _bars_since_max(values: np.ndarray, window: int) -> np.ndarray:
    """Bars back to the max over the trailing `window` bars (ties: the latest bar)."""
    return rolling.bars_since_max(values, window)
