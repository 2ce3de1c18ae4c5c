"""Compiled loops behind the features' windowed sums, EMAs, running extremes and safe division
(and the synthetic market's AR(1) recursion).

Each loop does exactly the arithmetic of the vectorised numpy it replaced, in the same order
(sequential running totals restarted every chunk, the first-order recursion `scipy.signal.lfilter`
evaluates, one IEEE division per row), so the features keep their values bit for bit; what goes
is the temporaries: a numpy expression allocates and touches a full-length array per operator,
while a loop reads its inputs once and writes its output once. numba compiles them on first use
and caches the machine code beside this file (`cache=True`), so later processes only load it.

Outputs are written into arrays the caller allocates with numpy: numpy asks the kernel for huge
pages on large arrays (a fresh 8 MB array can then cost 4 page faults instead of 2,048; on a
1.03 M-row run the faults fell from 96,000 to 34,000).
Chunk lengths are arguments, not module constants: numba freezes globals at compile time.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _first_complete_row(values: np.ndarray, window: int) -> int:
    """The first row whose trailing `window` rows hold no leading NaN."""
    for row in range(len(values)):
        if not np.isnan(values[row]):
            return row + window - 1
    return len(values) + window - 1


@njit(cache=True)
def rolling_sum(
    values: np.ndarray, window: int, chunk_rows: int, divisor: float, out: np.ndarray
) -> None:
    """out = sum over the trailing `window` rows divided by `divisor` (1 for the sum, `window`
    for the mean); NaN until the window is past the leading NaNs.

    The running total restarts every `chunk_rows` rows (a chunk's total is taken over the chunk
    plus the window before it), so rounding stays that of a chunk-long sum, and a window of zeros
    sums to exactly zero.
    """
    n = len(values)
    first_complete = _first_complete_row(values, window)
    out[: min(first_complete, n)] = np.nan
    cumulative = np.zeros(min(n, chunk_rows + window) + 1)
    for first in range(first_complete, n, chunk_rows):
        stop = min(first + chunk_rows, n)
        offset = first - window + 1
        total = 0.0
        for k in range(stop - offset):
            total += values[offset + k]
            cumulative[k + 1] = total
        for row in range(first, stop):
            k = row - first
            out[row] = (cumulative[k + window] - cumulative[k]) / divisor


@njit(cache=True)
def rolling_price_moments(
    prices: np.ndarray, window: int, chunk_rows: int, means: np.ndarray, stds: np.ndarray
) -> None:
    """means, stds = mean and population standard deviation of prices over the trailing window.

    Each chunk's running totals are of the prices minus the chunk's first price: raw price totals
    lose digits, and E[x^2] - E[x]^2 on them cancels most of the rest.
    """
    n = len(prices)
    first_complete = _first_complete_row(prices, window)
    means[: min(first_complete, n)] = np.nan
    stds[: min(first_complete, n)] = np.nan
    sums = np.zeros(min(n, chunk_rows + window) + 1)
    square_sums = np.zeros_like(sums)
    for first in range(first_complete, n, chunk_rows):
        stop = min(first + chunk_rows, n)
        offset = first - window + 1
        reference = prices[offset]
        total = 0.0
        square_total = 0.0
        for k in range(stop - offset):
            shifted = prices[offset + k] - reference
            total += shifted
            square_total += shifted * shifted
            sums[k + 1] = total
            square_sums[k + 1] = square_total
        for row in range(first, stop):
            k = row - first
            mean = (sums[k + window] - sums[k]) / window
            mean_square = (square_sums[k + window] - square_sums[k]) / window
            means[row] = mean + reference
            stds[row] = np.sqrt(max(mean_square - mean * mean, 0.0))


@njit(cache=True)
def first_order_filter(values: np.ndarray, gain: float, decay: float, out: np.ndarray) -> None:
    """out[t] = gain x[t] + decay out[t-1], out[-1] = 0: `lfilter([gain], [1, -decay], x)`,
    term for term (an EMA is gain alpha, decay 1 - alpha; an AR(1) is its shock scale and
    persistence)."""
    state = 0.0
    for row in range(len(values)):
        state = gain * values[row] + decay * state
        out[row] = state


@njit(cache=True)
def running_max(values: np.ndarray, window: int, scratch: np.ndarray, out: np.ndarray) -> None:
    """out = max over the trailing `window` rows; NaN until the window is full. `scratch` is
    space of len(values).

    van Herk / Gil-Werman: in blocks of `window` rows, the max from each row to its block's end
    (scratch) and from its block's start to each row (out); a trailing window spans at most two
    blocks, so its max is max(scratch[row - window + 1], out[row]). Three branch-free passes,
    whatever the window.
    """
    n = len(values)
    for start in range(0, n, window):
        stop = min(start + window, n)
        running = values[start]
        for row in range(start, stop):
            running = max(running, values[row])
            out[row] = running
        running = values[stop - 1]
        for row in range(stop - 1, start - 1, -1):
            running = max(running, values[row])
            scratch[row] = running
    for row in range(window - 1, n):
        out[row] = max(scratch[row - window + 1], out[row])
    out[: min(window - 1, n)] = np.nan


@njit(cache=True)
def bars_since_max(values: np.ndarray, window: int, queue: np.ndarray, out: np.ndarray) -> None:
    """out = how many rows back the max of the trailing `window` rows lies (ties: the latest
    row); NaN until the window is full. `queue` is scratch space of len(values).

    A monotonic queue of row numbers whose values strictly decrease from front to back: each
    row enters and leaves it once.
    """
    head = 0
    tail = 0  # the live queue is queue[head:tail]
    for row in range(len(values)):
        value = values[row]
        # Ties go to the latest row: an equal value behind it can never be the reported max.
        while tail > head and values[queue[tail - 1]] <= value:
            tail -= 1
        queue[tail] = row
        tail += 1
        if queue[head] <= row - window:
            head += 1
        out[row] = row - queue[head] if row >= window - 1 else np.nan


@njit(cache=True)
def divide(
    numerator: np.ndarray,
    denominator: np.ndarray,
    neutral: float,
    zero: np.ndarray,
    out: np.ndarray,
) -> None:
    """out = numerator / denominator, and `neutral` where `zero` is set."""
    for row in range(len(numerator)):
        out[row] = neutral if zero[row] else numerator[row] / denominator[row]


@njit(cache=True)
def divide_nonzero(
    numerator: np.ndarray, denominator: np.ndarray, neutral: float, out: np.ndarray
) -> None:
    """out = numerator / denominator, and `neutral` where the denominator is exactly 0."""
    for row in range(len(numerator)):
        out[row] = neutral if denominator[row] == 0 else numerator[row] / denominator[row]
