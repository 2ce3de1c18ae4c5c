import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from v8_model.data import rolling


def _windows(values: np.ndarray, window: int) -> np.ndarray:
    """Row t - window + 1 of the result is the window ending at row t."""
    return sliding_window_view(values, window)


def _with_nan_head(values: np.ndarray, head: int) -> np.ndarray:
    return np.concatenate([np.full(head, np.nan), values])


@pytest.mark.parametrize("window", [1, 2, 7, 26, 200])
def test_running_max_and_bars_since_max_match_brute_force(window):
    # Few distinct values, so that most windows hold ties (the latest row must win).
    values = np.random.default_rng(window).integers(0, 5, size=1_000).astype(np.float64)
    maxima = rolling.running_max(values, window)
    bars = rolling.bars_since_max(values, window)
    assert np.isnan(maxima[: window - 1]).all() and np.isnan(bars[: window - 1]).all()
    np.testing.assert_array_equal(maxima[window - 1 :], _windows(values, window).max(axis=1))
    latest_first = _windows(values, window)[:, ::-1]
    np.testing.assert_array_equal(bars[window - 1 :], latest_first.argmax(axis=1))


@pytest.mark.parametrize(("window", "chunk_rows"), [(1, 5), (3, 7), (50, 64), (200, 1 << 16)])
def test_rolling_sum_matches_brute_force_across_chunks(window, chunk_rows):
    values = _with_nan_head(np.random.default_rng(1).exponential(size=2_000), head=3)
    values[500:800] = 0.0  # a window of zeros sums to exactly zero
    sums = rolling.rolling_sum(values, window, chunk_rows)
    means = rolling.rolling_sum(values, window, chunk_rows, divisor=window)
    first = 3 + window - 1
    assert np.isnan(sums[:first]).all() and np.isnan(means[:first]).all()
    expected = _windows(values[3:], window).sum(axis=1)
    # A difference of running totals is exact to the rounding of a chunk-long total (values ~1).
    rounding = 1e-14 * (chunk_rows + window)
    np.testing.assert_allclose(sums[first:], expected, rtol=1e-12, atol=rounding)
    np.testing.assert_allclose(means[first:], expected / window, rtol=1e-12, atol=rounding)
    assert (sums[500 + window - 1 : 800] == 0.0).all()


@pytest.mark.parametrize(
    ("window", "chunk_rows", "block_rows"),
    [(5, 4, 1 << 15), (20, 300, 1_000), (200, 4096, 1 << 15)],
)
def test_price_moments_match_brute_force_in_blocks_and_the_short_last_chunk(
    monkeypatch, window, chunk_rows, block_rows
):
    # 5,000 rows: blocks of whole chunks (several with 1,000-row blocks), then a short last chunk.
    monkeypatch.setattr(rolling, "_BLOCK_ROWS", block_rows)
    prices = 60_000.0 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 1e-3, 5_000)))
    prices[1_000:1_300] = prices[999]  # flat: the standard deviation is 0, up to rounding
    means, stds = rolling.rolling_price_moments(prices, window, chunk_rows)
    only_means = rolling.rolling_price_mean(prices, window, chunk_rows)
    np.testing.assert_array_equal(only_means, means, strict=True)
    assert np.isnan(means[: window - 1]).all() and np.isnan(stds[: window - 1]).all()
    windows = _windows(prices, window)
    np.testing.assert_allclose(means[window - 1 :], windows.mean(axis=1), rtol=1e-13)
    # Where sigma is near 0 it is the square root of the rounding of E[x^2] - E[x]^2: up to about
    # 1e-8 of the price level with these 4,096-row chunks.
    rounding = 3e-8 * prices.max()
    np.testing.assert_allclose(stds[window - 1 :], windows.std(axis=1), rtol=1e-6, atol=rounding)


def test_first_order_filter_is_the_recursion():
    values = np.random.default_rng(3).standard_normal(1_000)
    expected = np.empty_like(values)
    state = 0.0
    for row, value in enumerate(values):
        state = 0.3 * value + 0.7 * state
        expected[row] = state
    np.testing.assert_array_equal(rolling.first_order_filter(values, 0.3, 0.7), expected)
    np.testing.assert_array_equal(
        rolling.first_order_filter(values, 0.3, 0.7), lfilter([0.3], [1.0, -0.7], values)
    )


def test_divide_gives_the_neutral_value_where_told():
    numerator = np.array([1.0, 0.0, 3.0, np.nan])
    denominator = np.array([2.0, 0.0, 0.0, 4.0])
    np.testing.assert_array_equal(
        rolling.divide(numerator, denominator, neutral=0.5), [0.5, 0.5, 0.5, np.nan]
    )
    zero = np.array([False, True, True, True])
    np.testing.assert_array_equal(
        rolling.divide(numerator, denominator, neutral=-1.0, zero=zero), [0.5, -1.0, -1.0, -1.0]
    )
