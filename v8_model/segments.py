"""A features dataset split in time and made ready to train on: scaled features and labels.

Order matters and is the point of this module: the split comes first; the processor (scaler and
label thresholds) sees the training segment only. No torch import: the Dagster `processor` asset
fits processors without loading the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.defaults import DEFAULT_HORIZON
from v8_model.features import FEATURE_NAMES
from v8_model.labels import forward_return_scores
from v8_model.processor import V8FeatureProcessor
from v8_model.split import ChronologicalSplit, chronological_split


@dataclass
class Segment:
    """Scaled features and labels of one segment (rows without a forward return dropped)."""

    features: np.ndarray
    labels: np.ndarray
    timestamps: pd.Series


@dataclass
class PreparedData:
    split: ChronologicalSplit
    processor: V8FeatureProcessor
    train: Segment
    validation: Segment
    test: Segment


def _scored_rows(dataset: pd.DataFrame, rows: slice, scores: np.ndarray) -> tuple:
    segment = dataset.iloc[rows]
    segment_scores = scores[rows]
    known = np.isfinite(segment_scores)
    return segment.loc[known], segment_scores[known]


def _scores_and_split(dataset: pd.DataFrame, horizon: int) -> tuple[np.ndarray, ChronologicalSplit]:
    scores = forward_return_scores(dataset["close"], horizon)
    return scores, chronological_split(len(dataset), horizon=horizon)


def _fit_on_training_segment(
    dataset: pd.DataFrame,
    scores: np.ndarray,
    split: ChronologicalSplit,
    symbol: str | None,
    horizon: int,
) -> V8FeatureProcessor:
    train_rows, train_scores = _scored_rows(dataset, split.train, scores)
    return V8FeatureProcessor(FEATURE_NAMES, horizon, symbol).fit(train_rows, train_scores)


def fit_processor(
    dataset: pd.DataFrame, symbol: str | None = None, horizon: int = DEFAULT_HORIZON
) -> V8FeatureProcessor:
    """Fit the scaler and label thresholds on the training segment of a features dataset."""
    scores, split = _scores_and_split(dataset, horizon)
    return _fit_on_training_segment(dataset, scores, split, symbol, horizon)


def prepare_segments(
    dataset: pd.DataFrame, processor: V8FeatureProcessor | None = None, symbol: str | None = None
) -> PreparedData:
    """Split the dataset, fit (or reuse) the processor, and scale and label each segment."""
    horizon = processor.horizon if processor is not None else DEFAULT_HORIZON
    scores, split = _scores_and_split(dataset, horizon)
    if processor is None:
        processor = _fit_on_training_segment(dataset, scores, split, symbol, horizon)

    def segment(rows: slice) -> Segment:
        kept, kept_scores = _scored_rows(dataset, rows, scores)
        return Segment(processor.transform(kept), processor.labels(kept_scores), kept["timestamp"])

    return PreparedData(
        split, processor, segment(split.train), segment(split.validation), segment(split.test)
    )
