"""A features dataset split in time and made ready to train on: scaled features and labels.

Order matters and is the point of this module: the split comes first; the processor (scaler and
label thresholds) sees the training segment only. No torch import: the Dagster `processor` asset
fits processors without loading the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.data.features import FEATURE_NAMES
from v8_model.data.labels import forward_return_scores
from v8_model.data.processor import V8FeatureProcessor
from v8_model.data.split import ChronologicalSplit, chronological_split
from v8_model.defaults import DEFAULT_HORIZON


@dataclass
class Segment:
    """Scaled features and labels of one segment (rows without a forward return dropped).

    `forward_returns` is each row's realised log return over the label horizon, a 1-D float64
    array: what the directional-skill test and the backtest score the model's calls against.
    """

    features: np.ndarray
    labels: np.ndarray
    timestamps: pd.Series
    forward_returns: np.ndarray


@dataclass
class PreparedData:
    split: ChronologicalSplit
    processor: V8FeatureProcessor
    train: Segment
    validation: Segment
    test: Segment
    rows: int  # of the whole dataset, and its time span
    first_timestamp: str
    last_timestamp: str


def _scored_positions(rows: slice, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of `rows` that have a forward return, and those scores."""
    positions = np.arange(len(scores))[rows]
    positions = positions[np.isfinite(scores[positions])]
    return positions, scores[positions]


def _scores_and_split(dataset: pd.DataFrame, horizon: int) -> tuple[np.ndarray, ChronologicalSplit]:
    scores = forward_return_scores(dataset["close"], horizon)
    return scores, chronological_split(len(dataset), horizon=horizon)


def forward_log_returns(close: pd.Series | np.ndarray, horizon: int) -> np.ndarray:
    """log(close_{t+h} / close_t) per row; NaN where the future is too short."""
    log_close = np.log(np.asarray(close, dtype=np.float64))
    returns = np.full(log_close.shape, np.nan)
    returns[:-horizon] = log_close[horizon:] - log_close[:-horizon]
    return returns


def _fit_on_training_segment(
    dataset: pd.DataFrame,
    scores: np.ndarray,
    split: ChronologicalSplit,
    symbol: str | None,
    horizon: int,
) -> V8FeatureProcessor:
    positions, train_scores = _scored_positions(split.train, scores)
    return V8FeatureProcessor(FEATURE_NAMES, horizon, symbol).fit(dataset, train_scores, positions)


def fit_processor(
    dataset: pd.DataFrame, symbol: str | None = None, horizon: int = DEFAULT_HORIZON
) -> V8FeatureProcessor:
    """Fit the scaler and label thresholds on the training segment of a features dataset."""
    scores, split = _scores_and_split(dataset, horizon)
    return _fit_on_training_segment(dataset, scores, split, symbol, horizon)


def prepare_segments(
    dataset: pd.DataFrame,
    processor: V8FeatureProcessor | None = None,
    symbol: str | None = None,
    split: ChronologicalSplit | None = None,
) -> PreparedData:
    """Split the dataset (the main split, or `split`: a walk-forward fold's), fit (or reuse) the
    processor, and scale and label each segment.

    The result holds no reference to `dataset`: a caller that drops it frees the frame, and
    only the float32 segments (and 1-D forward returns) stay in memory for training.
    """
    horizon = processor.horizon if processor is not None else DEFAULT_HORIZON
    scores, main_split = _scores_and_split(dataset, horizon)
    split = split or main_split
    if processor is None:
        processor = _fit_on_training_segment(dataset, scores, split, symbol, horizon)
    timestamps = dataset["timestamp"]
    returns = forward_log_returns(dataset["close"], horizon)

    def segment(rows: slice) -> Segment:
        positions, kept_scores = _scored_positions(rows, scores)
        return Segment(
            processor.transform(dataset, positions),
            processor.labels(kept_scores),
            timestamps.iloc[positions].reset_index(drop=True),
            returns[positions],
        )

    return PreparedData(
        split,
        processor,
        segment(split.train),
        segment(split.validation),
        segment(split.test),
        rows=len(dataset),
        first_timestamp=str(timestamps.iloc[0]),
        last_timestamp=str(timestamps.iloc[-1]),
    )
