"""The feature engine's first numpy implementation (commit 8da179e), for parity checks.

`v8_model.data.features` then computed its windowed sums, EMAs, running extremes, safe
divisions and calendar phases directly with vectorised numpy and `scipy.signal.lfilter`. Now the
calendar phases are looked up, and the primitives of `v8_model.data.rolling` do the same
arithmetic with fewer full-length temporaries (price moments in blocks of chunks, running maxima
by doubling in two buffers), and two groups of features run on two threads at once; every
feature's formula, built from these primitives, is unchanged.
`reference_features()` puts the first implementation's primitives back in place for the duration
of a `with` block, so `compute_features` then runs it: tests/test_features.py compares the two,
and bench/features.py times them side by side.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from unittest import mock

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from v8_model.data import features
from v8_model.defaults import MINUTES_PER_DAY


def _price_channels(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, range_sums: dict[int, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    """Stochastic oscillator, distances to the n-bar high and low, Aroon."""
    highest = _RunningExtremes(high)
    lowest = _RunningExtremes(-low)  # running maxima of -low are minus the running minima
    for window in (14, 21):
        high_n, low_n = highest.over(window), -lowest.over(window)
        stoch_k = 100.0 * _divide(close - low_n, high_n - low_n, neutral=0.5)
        yield f"stoch_k_{window}", stoch_k
        yield f"stoch_d_{window}", _rolling_mean(stoch_k, 3)
    for window in (20, 50, 200):
        # In units of the window's mean true range: a high lies at most window mean TRs away.
        range_sum = range_sums[window]
        to_high = _divide(window * (close - highest.over(window)), range_sum, neutral=0.0)
        yield f"distance_to_high_{window}", to_high
        to_low = _divide(window * (close + lowest.over(window)), range_sum, neutral=0.0)
        yield f"distance_to_low_{window}", to_low
    # Aroon 25 looks at the current bar and the 25 before it.
    yield "aroon_up_25", 100.0 * (25 - highest.bars_since_extreme(25 + 1)) / 25
    yield "aroon_down_25", 100.0 * (25 - lowest.bars_since_extreme(25 + 1)) / 25


def _calendar(timestamps: pd.Series) -> Iterator[tuple[str, np.ndarray]]:
    if timestamps.dt.tz is not None:
        timestamps = timestamps.dt.tz_convert(None)
    minute = timestamps.to_numpy().astype("datetime64[m]").astype(np.int64)
    day_phase = 2.0 * np.pi * (minute % MINUTES_PER_DAY) / MINUTES_PER_DAY
    minute_of_week = (minute + features._EPOCH_MINUTE_OF_WEEK_OFFSET) % features._MINUTES_PER_WEEK
    week_phase = 2.0 * np.pi * minute_of_week / features._MINUTES_PER_WEEK
    yield "minute_of_day_sin", np.sin(day_phase)
    yield "minute_of_day_cos", np.cos(day_phase)
    yield "day_of_week_sin", np.sin(week_phase)
    yield "day_of_week_cos", np.cos(week_phase)


def _divide(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    neutral: float,
    zero: np.ndarray | None = None,
) -> np.ndarray:
    """numerator / denominator, and `neutral` where the denominator is 0 (or where `zero`)."""
    if zero is None:
        zero = denominator == 0
    out = np.full(np.broadcast_shapes(np.shape(numerator), np.shape(denominator)), neutral)
    np.divide(numerator, denominator, out=out, where=~zero)
    return out


def _window_chunks(values: np.ndarray, window: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """(first, stop) row ranges covering every row whose trailing window has no leading NaN."""
    first_complete = int(np.argmax(~np.isnan(values))) + window - 1
    for first in range(first_complete, len(values), chunk_rows):
        yield first, min(first + chunk_rows, len(values))


def _rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the trailing `window` rows; NaN until the window is past the leading NaNs."""
    sums = np.full(len(values), np.nan)
    cumulative = np.zeros(min(len(values), features._CHUNK_ROWS + window) + 1)
    for first, stop in _window_chunks(values, window, features._CHUNK_ROWS):
        segment = values[first - window + 1 : stop]
        np.cumsum(segment, out=cumulative[1 : len(segment) + 1])
        np.subtract(
            cumulative[window : len(segment) + 1],
            cumulative[: len(segment) + 1 - window],
            out=sums[first:stop],
        )
    return sums


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    return _rolling_sum(values, window) / window


def _rolling_price_moments(prices: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of price levels over the trailing window.

    Running totals of raw prices lose digits, and E[x^2] - E[x]^2 on them cancels most of the
    rest, so each short chunk is first shifted by its own first price: within a few days the
    spread is a few percent of the level.
    """
    means = np.full(len(prices), np.nan)
    stds = np.full(len(prices), np.nan)
    for first, stop in _window_chunks(prices, window, features._PRICE_CHUNK_ROWS):
        segment = prices[first - window + 1 : stop]
        reference = segment[0]
        shifted = segment - reference
        sums = np.concatenate(([0.0], np.cumsum(shifted)))
        square_sums = np.concatenate(([0.0], np.cumsum(shifted * shifted)))
        mean = (sums[window:] - sums[:-window]) / window
        mean_square = (square_sums[window:] - square_sums[:-window]) / window
        means[first:stop] = mean + reference
        stds[first:stop] = np.sqrt(np.maximum(mean_square - mean * mean, 0.0))
    return means, stds


def _ema(values: np.ndarray, *, alpha: float) -> np.ndarray:
    """EMA with weights normalised over the available history (pandas' ewm(adjust=True)).

    `values` must hold no NaN. Row k's weights sum to (1 - decay^(k+1)) / alpha, which equals
    1 / alpha to double precision once decay^(k+1) < eps, so only the first rows are rescaled.
    """
    decay = 1.0 - alpha
    average = lfilter([alpha], [1.0, -decay], values)
    n_rescaled = min(len(values), int(np.log(np.finfo(np.float64).eps) / np.log(decay)) + 1)
    average[:n_rescaled] /= 1.0 - decay ** np.arange(1, n_rescaled + 1)
    return average


class _RunningExtremes:
    """Running maxima of a series over trailing windows, and how many bars back they lie.

    Built from a table of power-of-two windows: the max over w bars is the max of two
    overlapping power-of-two windows, so a window costs O(log w) vectorised passes. Values are
    NaN until the window is full. Ties resolve to the latest bar.
    """

    def __init__(self, values: np.ndarray) -> None:
        self._maxima = {1: values}  # width -> running max over `width` bars
        self._ages = {1: np.zeros_like(values)}  # width -> bars back to that max

    def over(self, window: int) -> np.ndarray:
        width = 1 << (window.bit_length() - 1)
        if width == window:
            return self._maximum(width)
        return _merge_maxima(self._maximum(width), window - width)

    def bars_since_extreme(self, window: int) -> np.ndarray:
        width = 1 << (window.bit_length() - 1)
        if width == window:
            return self._age(width)
        return _merge_ages(self._maximum(width), self._age(width), window - width)

    def _maximum(self, width: int) -> np.ndarray:
        if width not in self._maxima:
            self._maxima[width] = _merge_maxima(self._maximum(width // 2), width // 2)
        return self._maxima[width]

    def _age(self, width: int) -> np.ndarray:
        if width not in self._ages:
            half = width // 2
            self._ages[width] = _merge_ages(self._maximum(half), self._age(half), half)
        return self._ages[width]


def _merge_maxima(maxima: np.ndarray, shift: int) -> np.ndarray:
    """Running max over width + shift bars from the running max over width >= shift bars."""
    merged = np.full_like(maxima, np.nan)
    np.maximum(maxima[shift:], maxima[:-shift], out=merged[shift:])
    return merged


def _merge_ages(maxima: np.ndarray, ages: np.ndarray, shift: int) -> np.ndarray:
    """Bars back to the max over width + shift bars, from the max and its age over width bars.

    NaN stays where the window is incomplete: there the older half's age is already NaN.
    """
    merged = np.full_like(ages, np.nan)
    recent_wins = maxima[shift:] >= maxima[:-shift]  # ties go to the latest bar
    merged[shift:] = np.where(recent_wins, ages[shift:], ages[:-shift] + shift)
    return merged


def _one_after_another(write, *groups) -> None:
    """The first implementation computed the feature groups one after another, on one thread."""
    for group in groups:
        write(group)


def reference_features() -> AbstractContextManager:
    """Within the block, `v8_model.data.features.compute_features` is the first numpy
    implementation."""
    return mock.patch.multiple(
        features,
        _price_channels=_price_channels,
        _calendar=_calendar,
        _divide=_divide,
        _rolling_sum=_rolling_sum,
        _rolling_mean=_rolling_mean,
        _rolling_price_moments=_rolling_price_moments,
        _rolling_price_mean=lambda prices, window: _rolling_price_moments(prices, window)[0],
        _ema=_ema,
        _in_parallel=_one_after_another,
    )
