"""Run configuration of the assets (`dg.Config`): what the launchpad lets a user set per run."""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from crpbot_assets.exchange import (
    DEFAULT_EXCHANGE,
)
from crpbot_assets.profiles import (
    SYNTHETIC_SIGNAL,
    SYNTHETIC_START,
)
from v8_model.data.candles import (
    DEFAULT_MAX_GAP,
)

SYNTHETIC = "synthetic"
EXCHANGE = "exchange"


class CandlesConfig(dg.Config):
    source: Literal["synthetic", "parquet", "exchange"] = Field(
        default=SYNTHETIC,
        description="'synthetic': the synthetic market; 'parquet': the file at `path`; "
        "'exchange': download from `exchange` into the stored file, only the minutes after its "
        "last candle",
    )
    path: str | None = Field(
        default=None,
        description="parquet source: path or s3:// URI of 1-minute candles; '{symbol}' in it is "
        "replaced by the partition's symbol",
    )
    exchange: str = Field(
        default=DEFAULT_EXCHANGE, description="exchange source: the ccxt exchange id"
    )
    market: str | None = Field(
        default=None,
        description="exchange source: the market, e.g. 'BTC/USDT' ('{symbol}' is replaced); "
        "default '{SYMBOL}/USD'",
    )
    start: str | None = Field(
        default=None,
        description=f"synthetic: the market's first minute (default {SYNTHETIC_START}); "
        "exchange: where the download starts when nothing is stored (default: the profile's "
        "days before now)",
    )
    max_gap: str = Field(
        default=f"{DEFAULT_MAX_GAP // pd.Timedelta(minutes=1)}min",
        description="the longest allowed step between candles (pandas Timedelta, e.g. '3h'); "
        "raise it to accept a known exchange outage",
    )
    days: int | None = Field(
        default=None,
        description="synthetic: days of candles; exchange: the download's default start is this "
        "many days before now; default: the profile's",
    )
    seed: int | None = Field(default=None, description="synthetic seed; default: the profile's")
    signal: float = Field(default=SYNTHETIC_SIGNAL, description="synthetic planted signal, [0, 1)")
    volatility_clustering: bool = True


class ModelConfig(dg.Config):
    hyperparameters: dict[str, str] = Field(
        default_factory=dict,
        description="overrides of the profile's hyperparameters, by the entry point's names "
        "(e.g. {'epochs': '5', 'temperature-init': '2.5'})",
    )


class PromotionConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="promote even when the challenger is significantly worse than the serving "
        "champion on their shared unseen rows (recorded as `forced` in promotion.json); the "
        "gates and file hashes are still required",
    )
