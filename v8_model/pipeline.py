"""One symbol from its features dataset to an evaluated model: split, scale, label, train, gate.

Order matters and is the point of this module: the split comes first; the processor (scaler and
label thresholds) sees the training segment only; early stopping sees validation only; the gates
and reported metrics see the test segment only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from v8_model.defaults import DEFAULT_HORIZON
from v8_model.features import FEATURE_NAMES
from v8_model.gates import GateResult, evaluate_gates, evaluation_metrics
from v8_model.labels import forward_return_scores
from v8_model.processor import V8FeatureProcessor
from v8_model.split import ChronologicalSplit, chronological_split
from v8_model.train import EpochStats, TrainConfig, TrainResult, predict_logits, train_model


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
    rows: int  # of the whole dataset, and its time span
    first_timestamp: str
    last_timestamp: str


@dataclass
class SymbolOutcome:
    symbol: str
    training: TrainResult
    processor: V8FeatureProcessor
    metrics: dict
    gates: dict[str, GateResult]

    @property
    def all_gates_passed(self) -> bool:
        return all(gate.passed for gate in self.gates.values())


def _scored_positions(rows: slice, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of `rows` that have a forward return, and those scores."""
    positions = np.arange(len(scores))[rows]
    positions = positions[np.isfinite(scores[positions])]
    return positions, scores[positions]


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
    positions, train_scores = _scored_positions(split.train, scores)
    return V8FeatureProcessor(FEATURE_NAMES, horizon, symbol).fit(dataset, train_scores, positions)


def fit_processor(
    dataset: pd.DataFrame, symbol: str | None = None, horizon: int = DEFAULT_HORIZON
) -> V8FeatureProcessor:
    """Fit the scaler and label thresholds on the training segment of a features dataset."""
    scores, split = _scores_and_split(dataset, horizon)
    return _fit_on_training_segment(dataset, scores, split, symbol, horizon)


def prepare_segments(
    dataset: pd.DataFrame, processor: V8FeatureProcessor | None = None, symbol: str | None = None
) -> PreparedData:
    """Split the dataset, fit (or reuse) the processor, and scale and label each segment.

    The result holds no reference to `dataset`: a caller that drops it frees the frame, and
    only the float32 segments stay in memory for training.
    """
    horizon = processor.horizon if processor is not None else DEFAULT_HORIZON
    scores, split = _scores_and_split(dataset, horizon)
    if processor is None:
        processor = _fit_on_training_segment(dataset, scores, split, symbol, horizon)
    timestamps = dataset["timestamp"]

    def segment(rows: slice) -> Segment:
        positions, kept_scores = _scored_positions(rows, scores)
        return Segment(
            processor.transform(dataset, positions),
            processor.labels(kept_scores),
            timestamps.iloc[positions].reset_index(drop=True),
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


def train_and_evaluate(
    dataset: pd.DataFrame,
    *,
    symbol: str,
    config: TrainConfig | None = None,
    processor: V8FeatureProcessor | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> SymbolOutcome:
    """Train one symbol's model and measure it, with its gates, on the held-out test segment."""
    return train_on_segments(
        prepare_segments(dataset, processor, symbol),
        symbol=symbol,
        config=config,
        on_epoch=on_epoch,
        checkpoint_dir=checkpoint_dir,
    )


def train_on_segments(
    data: PreparedData,
    *,
    symbol: str,
    config: TrainConfig | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> SymbolOutcome:
    """`train_and_evaluate` on segments already prepared (the dataset itself no longer needed)."""
    config = config or TrainConfig()
    training = train_model(
        data.train.features,
        data.train.labels,
        data.validation.features,
        data.validation.labels,
        config,
        on_epoch,
        checkpoint_dir,
    )
    logits = predict_logits(training.model, data.test.features)
    gates = evaluate_gates(data.test.features, logits)
    metrics = evaluation_metrics(logits, data.test.labels, data.train.labels)
    thresholds = data.processor.thresholds
    metrics.update(
        {
            "symbol": symbol,
            "rows": data.rows,
            "first_timestamp": data.first_timestamp,
            "last_timestamp": data.last_timestamp,
            "segment_rows": {
                "train": len(data.train.labels),
                "validation": len(data.validation.labels),
                "test": len(data.test.labels),
            },
            "embargo_rows": data.split.embargo,
            "test_start": str(data.test.timestamps.iloc[0]),
            "label_thresholds": {
                "sell_below": thresholds.sell_below,
                "buy_above": thresholds.buy_above,
                "horizon": thresholds.horizon,
            },
            "train_seconds": training.train_seconds,
            "device": training.device,
            "epochs_run": len(training.history),
            "best_epoch": training.best_epoch,
            "best_val_loss": training.best_val_loss,
            "stopped_early": training.stopped_early,
            "history": [vars(stats) for stats in training.history],
            "hyperparameters": config.to_dict(),
            "gates": {name: gate.to_dict() for name, gate in gates.items()},
            "all_gates_passed": all(gate.passed for gate in gates.values()),
        }
    )
    return SymbolOutcome(symbol, training, data.processor, metrics, gates)
