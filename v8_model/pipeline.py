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
    config = config or TrainConfig()
    data = prepare_segments(dataset, processor, symbol)
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
            "rows": int(len(dataset)),
            "first_timestamp": str(dataset["timestamp"].iloc[0]),
            "last_timestamp": str(dataset["timestamp"].iloc[-1]),
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
