"""Trading the model's calls after costs: the numbers that say whether its skill is usable.

Rules, kept simple so that every figure can be checked by hand:
- at a minute where no position is open, the model's top class decides: BUY goes long, SELL goes
  short (flat with `long_only`), HOLD stays flat; a BUY/SELL call trades only when its
  probability reaches the confidence threshold;
- a position is held for the label horizon, then closed; the next call is read at the closing
  minute, so positions never overlap;
- each trade pays the cost per side (fee + slippage) on entry and on exit: its net return is
  side * (exp(forward log return) - 1) - 2 * cost;
- equity compounds trade by trade; buy-and-hold holds the asset over the same minutes.

The confidence threshold is chosen on validation rows only (`choose_threshold`) and then applied
unchanged to the test rows. With no trade the figures are zeros and `note` says why; nothing is
NaN.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from v8_model.config import LOWEST_CONFIDENCE
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.evaluation.metrics import BacktestFigures, EquityCurve
from v8_model.evaluation.worth import BUY, SELL

BPS = 1e-4
MINUTES_PER_YEAR = 365 * MINUTES_PER_DAY  # crypto trades every minute of the year
# The thresholds the validation search tries (those at or above the `min_confidence` setting).
CONFIDENCE_GRID = (LOWEST_CONFIDENCE, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9)
CURVE_POINTS = 300
NO_TRADES_NOTE = "no trades: no BUY/SELL call reached the confidence threshold"


def trade_signals(
    probabilities: np.ndarray, threshold: float | np.ndarray, long_only: bool
) -> np.ndarray:
    """Per row: +1 (a long call), -1 (a short call) or 0, before positions are sequenced."""
    top = probabilities.argmax(axis=1)
    confident = probabilities.max(axis=1) >= threshold
    signals = np.zeros(len(probabilities), dtype=np.int8)
    signals[confident & (top == BUY)] = 1
    if not long_only:
        signals[confident & (top == SELL)] = -1
    return signals


def _entries(signals: np.ndarray, horizon: int) -> np.ndarray:
    """Entry rows: the first signal, then the first signal at or after each position closes."""
    entries, row, n = [], 0, len(signals)
    candidates = np.flatnonzero(signals)
    while True:
        next_position = np.searchsorted(candidates, row)
        if next_position >= len(candidates):
            return np.asarray(entries, dtype=np.int64)
        row = int(candidates[next_position])
        entries.append(row)
        row += horizon
        if row >= n:
            return np.asarray(entries, dtype=np.int64)


def break_even_cost(gross: np.ndarray) -> float:
    """The cost per side (a fraction) at which compounding `gross` trade returns nets zero."""
    if len(gross) == 0:
        return 0.0

    def log_wealth(cost: float) -> float:
        return float(np.sum(np.log1p(gross - 2 * cost)))

    upper = (1.0 + float(gross.min())) / 2 - 1e-12  # beyond it a trade loses everything
    lower = min(-1.0, upper - 1.0)
    if log_wealth(upper - 1e-9) >= 0:
        return upper
    return float(brentq(log_wealth, lower, upper - 1e-9, xtol=1e-12))


def run_backtest(
    probabilities: np.ndarray,
    forward_returns: np.ndarray,
    *,
    horizon: int,
    threshold: float | np.ndarray,
    fee_bps: float,
    slippage_bps: float,
    long_only: bool = False,
) -> tuple[BacktestFigures, EquityCurve]:
    """The backtest of `probabilities` (rows × SELL/HOLD/BUY) against the forward log returns."""
    if len(probabilities) != len(forward_returns):
        raise ValueError(
            f"{len(probabilities)} probability rows but {len(forward_returns)} forward returns"
        )
    if not np.all(np.isfinite(forward_returns)):
        raise ValueError("forward_returns contain NaN/Inf: drop rows without a forward return")
    rows = len(forward_returns)
    cost = (fee_bps + slippage_bps) * BPS
    signals = trade_signals(probabilities, threshold, long_only)
    entries = _entries(signals, horizon)
    sides = signals[entries].astype(np.float64)
    gross = sides * np.expm1(forward_returns[entries])
    net = gross - 2 * cost
    # Buy-and-hold over the same minutes: the forward returns of every horizon-th row chain up.
    held = forward_returns[::horizon]
    buy_and_hold = float(np.expm1(held.sum())) if rows else 0.0

    per_minute = np.zeros(rows)
    per_minute[entries] = net
    trades = len(entries)
    net_equity = np.cumprod(1 + net)
    peaks = np.maximum.accumulate(np.concatenate([[1.0], net_equity]))[1:]
    spread = per_minute.std()
    figures = BacktestFigures(
        gross_return=float(np.prod(1 + gross) - 1),
        net_return=float(np.prod(1 + net) - 1),
        buy_and_hold_return=buy_and_hold,
        trades=trades,
        hit_rate=float(np.mean(gross > 0)) if trades else 0.0,
        exposure=float(min(1.0, trades * horizon / rows)) if rows else 0.0,
        sharpe=float(per_minute.mean() / spread * math.sqrt(MINUTES_PER_YEAR))
        if spread > 0
        else 0.0,
        max_drawdown=float(np.max(1 - net_equity / peaks)) if trades else 0.0,
        turnover=float(2 * trades / (rows / MINUTES_PER_DAY)) if rows else 0.0,
        break_even_fee_bps=break_even_cost(gross) / BPS,
        cost_bps_per_side=fee_bps + slippage_bps,
        rows=rows,
        note="" if trades else NO_TRADES_NOTE,
    )
    return figures, _equity_curve(rows, horizon, entries, gross, net, held)


def _equity_curve(
    rows: int,
    horizon: int,
    entries: np.ndarray,
    gross: np.ndarray,
    net: np.ndarray,
    held: np.ndarray,
) -> EquityCurve:
    """Equity of each line, each trade booked at its closing minute, sampled at CURVE_POINTS."""
    if rows == 0:
        return EquityCurve(bars=[], net=[], gross=[], buy_and_hold=[])
    exits = np.minimum(entries + horizon, rows - 1)
    lines = []
    for exit_rows, returns in (
        (exits, np.log1p(net)),
        (exits, np.log1p(gross)),
        (np.minimum(np.arange(len(held)) * horizon + horizon, rows - 1), held),
    ):
        booked = np.zeros(rows)
        np.add.at(booked, exit_rows, returns)
        lines.append(np.exp(np.cumsum(booked)))
    bars = np.unique(np.linspace(0, rows - 1, min(CURVE_POINTS, rows)).astype(np.int64))
    net_line, gross_line, hold_line = (line[bars] for line in lines)
    return EquityCurve(
        bars=bars.tolist(),
        net=net_line.tolist(),
        gross=gross_line.tolist(),
        buy_and_hold=hold_line.tolist(),
    )


def choose_threshold(
    probabilities: np.ndarray,
    forward_returns: np.ndarray,
    *,
    horizon: int,
    fee_bps: float,
    slippage_bps: float,
    long_only: bool,
    min_confidence: float,
) -> float:
    """The grid threshold (>= min_confidence) with the best net return on these validation rows;
    ties go to the lowest. Only ever called with validation rows."""
    grid = sorted({min_confidence, *(t for t in CONFIDENCE_GRID if t >= min_confidence)})
    best, best_return = grid[0], -math.inf
    for threshold in grid:
        figures, _ = run_backtest(
            probabilities,
            forward_returns,
            horizon=horizon,
            threshold=threshold,
            fee_bps=fee_bps,
            slippage_bps=slippage_bps,
            long_only=long_only,
        )
        if figures.net_return > best_return + 1e-12:
            best, best_return = threshold, figures.net_return
    return float(best)
