"""A features dataset split in time and made ready to train on: scaled features and labels.

Order matters and is the point of this module: the split comes first; the processor (scaler and
label thresholds) sees the training segment only. How the rows are split and labelled is the
processor's `DataSettings` (TrainConfig's split and label settings). No torch import: the
Dagster `processor` asset fits processors without loading the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.data.features import FEATURE_NAMES
from v8_model.data.labels import forward_return_scores
from v8_model.data.processor import TRANSFORM_CHUNK_ROWS, V8FeatureProcessor
from v8_model.data.settings import DEFAULT_DATA_SETTINGS, DataSettings
from v8_model.data.split import ChronologicalSplit, chronological_split


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


@dataclass
class FeatureMatrix:
    """A features dataset as training reads it: the 72 features as one float32 matrix (rows ×
    72, in FEATURE_NAMES order), with each row's close and timestamp.

    `prepare_segments` consumes it: the matrix is compacted and scaled in place and becomes the
    segments' storage, so the feature matrix exists once, never as a frame and segments both.
    """

    features: np.ndarray
    close: np.ndarray
    timestamps: pd.Series

    def __post_init__(self) -> None:
        rows = len(self.features)
        if self.features.dtype != np.float32 or self.features.shape != (rows, len(FEATURE_NAMES)):
            raise ValueError(
                f"feature matrix of {self.features.dtype} {self.features.shape}: expected "
                f"float32 (rows, {len(FEATURE_NAMES)})"
            )
        if not self.features.flags.c_contiguous:
            raise ValueError("the feature matrix must be C-contiguous (rows scaled in place)")
        if not len(self.close) == len(self.timestamps) == rows:
            raise ValueError(
                f"a feature matrix of {rows} rows needs as many closes and timestamps, got "
                f"{len(self.close)} and {len(self.timestamps)}"
            )

    def __len__(self) -> int:
        return len(self.features)


def _scored_positions(rows: slice, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of `rows` that have a forward return, and those scores."""
    positions = np.arange(len(scores))[rows]
    positions = positions[np.isfinite(scores[positions])]
    return positions, scores[positions]


def _scores_and_split(
    close: pd.Series | np.ndarray, settings: DataSettings
) -> tuple[np.ndarray, ChronologicalSplit]:
    horizon = settings.label_horizon
    scores = forward_return_scores(close, horizon, settings.label_volatility_window)
    split = chronological_split(len(close), fractions=settings.fractions, horizon=horizon)
    return scores, split


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
    settings: DataSettings,
) -> V8FeatureProcessor:
    positions, train_scores = _scored_positions(split.train, scores)
    return V8FeatureProcessor(FEATURE_NAMES, settings, symbol).fit(dataset, train_scores, positions)


def fit_processor(
    dataset: pd.DataFrame, symbol: str | None = None, settings: DataSettings = DEFAULT_DATA_SETTINGS
) -> V8FeatureProcessor:
    """Fit the scaler and label thresholds on the training segment of a features dataset."""
    scores, split = _scores_and_split(dataset["close"], settings)
    return _fit_on_training_segment(dataset, scores, split, symbol, settings)


def _settings_of(
    processor: V8FeatureProcessor | None, settings: DataSettings | None
) -> DataSettings:
    """The settings to split and label with; ValueError when a given processor's differ."""
    if processor is None:
        return settings or DEFAULT_DATA_SETTINGS
    if settings is not None and settings != processor.settings:
        raise ValueError(
            f"the {processor.symbol or 'given'} processor was fitted with other split or label "
            f"settings than the training settings ({processor.settings.differences(settings)}, "
            "processor vs training): refit the processor with the training settings"
        )
    return processor.settings


def _rows_to_top(matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Move the rows at `positions` (strictly increasing) to the top of `matrix`, in order, and
    return that top part (a view).

    Row i comes from positions[i] >= i, and every later source lies below the rows written so
    far, so copying one chunk at a time from the top never overwrites a row still to be read.
    """
    if np.any(np.diff(positions) <= 0):
        raise ValueError("segment rows must be strictly increasing: segments in time order")
    for start in range(0, len(positions), TRANSFORM_CHUNK_ROWS):
        sources = positions[start : start + TRANSFORM_CHUNK_ROWS]
        if sources[-1] != start + len(sources) - 1:  # else the chunk is already in place
            matrix[start : start + len(sources)] = matrix[sources]
    return matrix[: len(positions)]


def prepare_segments(
    dataset: pd.DataFrame | FeatureMatrix,
    processor: V8FeatureProcessor | None = None,
    symbol: str | None = None,
    split: ChronologicalSplit | None = None,
    settings: DataSettings | None = None,
) -> PreparedData:
    """Split the dataset (the main split, or `split`: a walk-forward fold's), fit (or reuse) the
    processor, and scale and label each segment.

    `settings` (default: a given processor's, else the defaults) split and label the rows; a
    given processor fitted with other settings is refused, naming each that differs.

    The result holds no reference to a frame: a caller that drops it frees the frame, and only
    the float32 segments (and 1-D forward returns) stay in memory for training. A FeatureMatrix
    is consumed instead: its matrix, compacted and scaled in place, holds the three segments
    (views of it), with the same figures a frame of the same values gives.
    """
    settings = _settings_of(processor, settings)
    in_place = isinstance(dataset, FeatureMatrix)
    close = dataset.close if in_place else dataset["close"]
    timestamps = dataset.timestamps if in_place else dataset["timestamp"]
    scores, main_split = _scores_and_split(close, settings)
    split = split or main_split
    kept = [_scored_positions(rows, scores) for rows in (split.train, split.validation, split.test)]
    if in_place:
        # The training rows come first: fit on the top of the compacted matrix, then scale it.
        segment_rows = _rows_to_top(dataset.features, np.concatenate([p for p, _ in kept]))
        if processor is None:
            train_rows, train_scores = kept[0]
            processor = V8FeatureProcessor(FEATURE_NAMES, settings, symbol).fit(
                segment_rows[: len(train_rows)], train_scores
            )
        processor.scale_in_place(segment_rows)
        bounds = np.cumsum([0] + [len(positions) for positions, _ in kept])
        features = [segment_rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    else:
        if processor is None:
            processor = _fit_on_training_segment(dataset, scores, split, symbol, settings)
        features = [processor.transform(dataset, positions) for positions, _ in kept]
    returns = forward_log_returns(close, settings.label_horizon)
    train, validation, test = (
        Segment(
            segment_features,
            processor.labels(segment_scores),
            timestamps.iloc[positions].reset_index(drop=True),
            returns[positions],
        )
        for segment_features, (positions, segment_scores) in zip(features, kept, strict=True)
    )
    return PreparedData(
        split,
        processor,
        train,
        validation,
        test,
        rows=len(dataset),
        first_timestamp=str(timestamps.iloc[0]),
        last_timestamp=str(timestamps.iloc[-1]),
    )
