"""Vectorised numpy primitives behind the features' windowed sums, EMAs, running extremes and
safe division (and the synthetic market's AR(1) recursion).

What costs time here is rarely the arithmetic: a fresh full-length float64 array costs the
kernel a page fault per page it touches, several times a warm pass over it. So outputs are
allocated once, every later step writes into them or into small scratch buffers (`out=`), and
long computations run block by block over scratch space that stays in the CPU caches.

Windowed sums restart their running total every `chunk_rows` rows (arguments, so that tests can
make them short): the rounding stays that of a chunk-long sum instead of growing with the
series, and a window of zeros sums to exactly zero, which the features' neutral values rely on.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

# Rows per block of the price moments: scratch of a few hundred KB, which stays in cache.
_BLOCK_ROWS = 1 << 15


def _first_complete_row(values: np.ndarray, window: int) -> int:
    """The first row whose trailing `window` rows hold no leading NaN."""
    is_nan = np.isnan(values)
    leading_nans = int(np.argmin(is_nan)) if not is_nan.all() else len(values)
    return min(leading_nans + window - 1, len(values))


def rolling_sum(
    values: np.ndarray, window: int, chunk_rows: int, divisor: float = 1.0
) -> np.ndarray:
    """The sum over the trailing `window` rows divided by `divisor` (1 for the sum, `window` for
    the mean); NaN until the window is past the leading NaNs.

    Each chunk's running total (np.cumsum adds in order) is taken over the chunk plus the
    window before it.
    """
    n = len(values)
    out = np.empty(n)
    first_complete = _first_complete_row(values, window)
    out[:first_complete] = np.nan
    cumulative = np.empty(min(n, chunk_rows + window) + 1)
    cumulative[0] = 0.0
    for first in range(first_complete, n, chunk_rows):
        segment = values[first - window + 1 : min(first + chunk_rows, n)]
        np.cumsum(segment, out=cumulative[1 : len(segment) + 1])
        np.subtract(
            cumulative[window : len(segment) + 1],
            cumulative[: len(segment) + 1 - window],
            out=out[first : first + len(segment) - window + 1],
        )
    if divisor != 1.0:
        np.divide(out, divisor, out=out)
    return out


def rolling_price_mean(prices: np.ndarray, window: int, chunk_rows: int) -> np.ndarray:
    """The mean of prices over the trailing window; NaN until the window is full (see
    `rolling_price_moments`: the same means, without the standard deviations)."""
    means = np.empty(len(prices))
    _price_moments(prices, window, chunk_rows, means, None)
    return means


def rolling_price_moments(
    prices: np.ndarray, window: int, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation of prices over the trailing window; NaN until
    the window is full.

    Running totals of raw prices lose digits, and E[x^2] - E[x]^2 on them cancels most of the
    rest, so each chunk's totals are of the prices minus the chunk's first price (within a few
    days the spread is a few percent of the level).
    """
    means, stds = np.empty(len(prices)), np.empty(len(prices))
    _price_moments(prices, window, chunk_rows, means, stds)
    return means, stds


def _price_moments(
    prices: np.ndarray, window: int, chunk_rows: int, means: np.ndarray, stds: np.ndarray | None
) -> None:
    """Fill means (and stds unless None) chunk by chunk. Chunks are short, so they are
    processed as the rows of 2-D blocks: one numpy call covers many chunks."""
    n = len(prices)
    first_complete = _first_complete_row(prices, window)
    for out in (means, stds):
        if out is not None:
            out[:first_complete] = np.nan
    span = chunk_rows + window - 1  # the rows a chunk reads
    chunks_per_block = max(1, _BLOCK_ROWS // chunk_rows)
    scratch = _PriceMomentScratch(chunks_per_block, chunk_rows, window, stds is not None)
    step = prices.strides[0]
    first = first_complete
    while first < n:
        # Whole chunks as a strided (chunk, row) view of the prices; a short last chunk alone.
        n_chunks = min(chunks_per_block, (n - first) // chunk_rows)
        if n_chunks:
            segments = as_strided(
                prices[first - window + 1 :],
                shape=(n_chunks, span),
                strides=(chunk_rows * step, step),
                writeable=False,
            )
            rows = n_chunks * chunk_rows
            shape = (n_chunks, chunk_rows)
        else:
            segments = prices[first - window + 1 :][np.newaxis]
            rows = n - first
            shape = (1, rows)
        block = slice(first, first + rows)
        scratch.moments(
            segments,
            means[block].reshape(shape),
            None if stds is None else stds[block].reshape(shape),
        )
        first += rows


class _PriceMomentScratch:
    """Reusable buffers of `_price_moments` for blocks of up to `chunks` chunks."""

    def __init__(self, chunks: int, chunk_rows: int, window: int, with_std: bool) -> None:
        self._window = window
        # Column 0 is the empty running total; np.cumsum turns columns 1.. into the totals.
        self._sums = np.zeros((chunks, chunk_rows + window))
        if with_std:
            self._square_sums = np.zeros_like(self._sums)
            self._square_mean = np.empty((chunks, chunk_rows))

    def moments(self, segments: np.ndarray, means: np.ndarray, stds: np.ndarray | None) -> None:
        """means, stds (chunks x rows) from segments (chunks x (rows + window - 1))."""
        window = self._window
        chunks, rows = means.shape
        reference = segments[:, :1]
        sums = self._sums[:chunks, : rows + window]
        np.subtract(segments, reference, out=sums[:, 1:])
        if stds is not None:
            square_sums = self._square_sums[:chunks, : rows + window]
            np.multiply(sums[:, 1:], sums[:, 1:], out=square_sums[:, 1:])
            np.cumsum(square_sums, axis=1, out=square_sums)
        np.cumsum(sums, axis=1, out=sums)
        np.subtract(sums[:, window:], sums[:, :rows], out=means)
        np.divide(means, window, out=means)
        if stds is not None:
            square_mean = self._square_mean[:chunks, :rows]
            np.subtract(square_sums[:, window:], square_sums[:, :rows], out=stds)
            np.divide(stds, window, out=stds)
            np.multiply(means, means, out=square_mean)
            np.subtract(stds, square_mean, out=stds)
            np.maximum(stds, 0.0, out=stds)
            np.sqrt(stds, out=stds)
        np.add(means, reference, out=means)


def first_order_filter(values: np.ndarray, gain: float, decay: float) -> np.ndarray:
    """out[t] = gain x[t] + decay out[t-1], out[-1] = 0 (an EMA is gain alpha, decay
    1 - alpha; an AR(1) is its shock scale and persistence)."""
    # Imported here: scipy.signal takes about 0.25 s to import, and the processes that import
    # this module for the feature names, or the synthetic market's profiles, never filter.
    from scipy.signal import lfilter

    return lfilter([gain], [1.0, -decay], values)


def running_max(values: np.ndarray, window: int) -> np.ndarray:
    """The max over the trailing `window` rows; NaN until the window is full.

    Doubling: the max over 2w rows is the max of two maxima over w rows, w apart, and the
    largest power of two p <= window finishes with one shift of window - p. log2(window)
    passes over two buffers.
    """
    maxima, _ = _doubling(values, window, with_ages=False)
    maxima[: window - 1] = np.nan
    return maxima


def bars_since_max(values: np.ndarray, window: int) -> np.ndarray:
    """How many rows back the max of the trailing `window` rows lies (ties: the latest row);
    NaN until the window is full."""
    _, ages = _doubling(values, window, with_ages=True)
    bars = ages.astype(np.float64)
    bars[: window - 1] = np.nan
    return bars


def _doubling(
    values: np.ndarray, window: int, *, with_ages: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The running max over `window` rows (and the rows back to it), by doubling windows.

    Rows before the first full window hold the max over the rows so far, so every later merge
    reads a max over its clipped window: the rows from `window - 1` on are exact.
    """
    n = len(values)
    maxima, spare = values.copy(), np.empty(n)
    # Ages are below `window`: the smallest integer type that holds them makes their passes cheap.
    age_type = np.min_scalar_type(window)
    ages, spare_ages = (np.zeros(n, age_type), np.empty(n, age_type)) if with_ages else (None, None)
    width = 1
    while width < window:
        shift = min(width, window - width)
        recent, older = maxima[shift:], maxima[:-shift]
        np.maximum(recent, older, out=spare[shift:])
        spare[:shift] = maxima[:shift]
        if with_ages:
            # The recent half's max wins ties: it is the latest row holding that value.
            np.add(ages[:-shift], shift, out=spare_ages[shift:])
            np.copyto(spare_ages[shift:], ages[shift:], where=recent >= older)
            spare_ages[:shift] = ages[:shift]
            ages, spare_ages = spare_ages, ages
        maxima, spare = spare, maxima
        width += shift
    return maxima, ages


def divide(
    numerator: np.ndarray,
    denominator: np.ndarray,
    neutral: float,
    zero: np.ndarray | None = None,
) -> np.ndarray:
    """numerator / denominator, and `neutral` where `zero` is set (by default, where the
    denominator is exactly 0)."""
    if zero is None:
        zero = denominator == 0
    with np.errstate(divide="ignore", invalid="ignore"):  # the rows `neutral` then replaces
        out = np.divide(numerator, denominator)
    np.copyto(out, neutral, where=zero)
    return out
