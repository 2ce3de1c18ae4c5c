"""SELL / HOLD / BUY labels from the volatility-scaled forward return.

score_t = log(close_{t+h} / close_t) / (sigma_t * sqrt(h)), where sigma_t is the std of 1-bar log
returns over the trailing LABEL_VOLATILITY_WINDOW bars (known at t) and h the horizon. Scaling by
volatility keeps the classes meaningful in calm and wild regimes alike. The SELL/HOLD and
HOLD/BUY thresholds are quantiles of the training segment's scores (by default 1/3 and 2/3, so the
classes come out roughly balanced); they are stored with the processor and reused unchanged on
validation, test and live data. Horizon, window and quantiles are `TrainConfig` settings
(`label_horizon`, `label_volatility_window`, `label_sell_quantile`, `label_buy_quantile`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.config import TrainConfig
from v8_model.defaults import DEFAULT_HORIZON, LABEL_VOLATILITY_WINDOW

SELL, HOLD, BUY = 0, 1, 2


def forward_return_scores(
    close: pd.Series | np.ndarray,
    horizon: int = DEFAULT_HORIZON,
    volatility_window: int = LABEL_VOLATILITY_WINDOW,
) -> np.ndarray:
    """Volatility-scaled forward log return per bar; NaN where the future or past is too short."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 bar, got {horizon}")
    log_close = np.log(np.asarray(close, dtype=np.float64))
    one_bar = pd.Series(np.diff(log_close, prepend=np.nan))
    trailing_sigma = one_bar.rolling(volatility_window, min_periods=volatility_window).std()
    forward = np.full(log_close.shape, np.nan)
    forward[:-horizon] = log_close[horizon:] - log_close[:-horizon]
    sigma = trailing_sigma.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = forward / (sigma * np.sqrt(horizon))
    # A flat trailing window (sigma = 0) gives no scale: the score is unknown, not infinite.
    scores[~np.isfinite(scores)] = np.nan
    return scores


@dataclass(frozen=True)
class LabelThresholds:
    """Score cut-offs: score < sell_below is SELL, score > buy_above is BUY, HOLD in between."""

    sell_below: float
    buy_above: float
    horizon: int = DEFAULT_HORIZON

    @classmethod
    def fit(
        cls,
        train_scores: np.ndarray,
        horizon: int = DEFAULT_HORIZON,
        quantiles: tuple[float, float] = (
            TrainConfig.label_sell_quantile,
            TrainConfig.label_buy_quantile,
        ),
    ) -> LabelThresholds:
        """The training scores' `quantiles` (by default three equal-sized classes)."""
        finite = train_scores[np.isfinite(train_scores)]
        if finite.size < 3:
            raise ValueError(
                f"cannot fit label thresholds: only {finite.size} training rows have a score"
            )
        sell_below, buy_above = np.quantile(finite, list(quantiles))
        return cls(float(sell_below), float(buy_above), horizon)

    def assign(self, scores: np.ndarray) -> np.ndarray:
        """Class per score (int64); scores must be finite — drop the unknown ones first."""
        if not np.all(np.isfinite(scores)):
            raise ValueError("label scores contain NaN/Inf; drop rows without a forward return")
        labels = np.full(scores.shape, HOLD, dtype=np.int64)
        labels[scores < self.sell_below] = SELL
        labels[scores > self.buy_above] = BUY
        return labels
