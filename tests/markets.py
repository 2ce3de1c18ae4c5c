"""Markets built for the monitor tests: one synthetic market that continues, or changes at a row.

Each is 1-minute candles from `v8_model.data.synthetic.generate_candles` (volatility clustering off,
so that a few days of fresh rows look like the training days when nothing changed). A change
splices in the rows of another market from `at` on, its prices rescaled to continue from the
last close, so nothing but the planted change moves at the seam.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY

SYMBOL = "BTC"
PRICE_COLUMNS = ("open", "high", "low", "close")


def market(days: float, *, signal: float, seed: int) -> pd.DataFrame:
    return generate_candles(
        SYMBOL,
        minutes=int(days * MINUTES_PER_DAY),
        seed=seed,
        signal=signal,
        volatility_clustering=False,
    )


def spliced(before: pd.DataFrame, after: pd.DataFrame, at: int) -> pd.DataFrame:
    """`before`'s first `at` rows, then `after`'s rows from `at` on, rescaled to continue."""
    tail = after.iloc[at:].copy()
    scale = before["close"].iloc[at - 1] / tail["open"].iloc[0]
    for column in PRICE_COLUMNS:
        tail[column] *= scale
    return pd.concat([before.iloc[:at], tail], ignore_index=True)


def with_long_wicks(candles: pd.DataFrame, at: int, power: float = 4.0) -> pd.DataFrame:
    """A change of structure from row `at` on: every wick `power` times longer in log terms."""
    changed = candles.copy()
    rows = changed.index[at:]
    top = np.maximum(changed.loc[rows, "open"], changed.loc[rows, "close"])
    bottom = np.minimum(changed.loc[rows, "open"], changed.loc[rows, "close"])
    changed.loc[rows, "high"] = top * (changed.loc[rows, "high"] / top) ** power
    changed.loc[rows, "low"] = bottom * (changed.loc[rows, "low"] / bottom) ** power
    return changed


def rescaled(candles: pd.DataFrame, at: int, price: float, volume: float) -> pd.DataFrame:
    """A level change from row `at` on: prices times `price`, volume times `volume`."""
    changed = candles.copy()
    for column in PRICE_COLUMNS:
        changed.loc[at:, column] *= price
    changed.loc[at:, "volume"] *= volume
    return changed
