"""One symbol from its features dataset to an evaluated model: split, scale, label, train, gate.

The processor sees the training segment only (`v8_model.segments`); early stopping sees
validation only; the gates and the evaluation record see the test segment only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from v8_model.config import TrainConfig
from v8_model.evaluation import EpochStats, Evaluation, SegmentRows, metrics_fields
from v8_model.gates import evaluate_gates, evaluation_metrics
from v8_model.loop import TrainResult, train_model
from v8_model.net import predict_logits
from v8_model.processor import V8FeatureProcessor
from v8_model.segments import PreparedData, prepare_segments


@dataclass
class SymbolOutcome:
    symbol: str
    training: TrainResult
    processor: V8FeatureProcessor
    evaluation: Evaluation


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
    evaluation = Evaluation(
        **metrics_fields(evaluation_metrics(logits, data.test.labels, data.train.labels)),
        symbol=symbol,
        rows=data.rows,
        first_timestamp=data.first_timestamp,
        last_timestamp=data.last_timestamp,
        segment_rows=SegmentRows(
            train=len(data.train.labels),
            validation=len(data.validation.labels),
            test=len(data.test.labels),
        ),
        embargo_rows=data.split.embargo,
        test_start=str(data.test.timestamps.iloc[0]),
        label_thresholds=data.processor.thresholds,
        train_seconds=training.train_seconds,
        device=training.device,
        epochs_run=len(training.history),
        best_epoch=training.best_epoch,
        best_val_loss=training.best_val_loss,
        stopped_early=training.stopped_early,
        history=training.history,
        hyperparameters=config,
        gates=gates,
        all_gates_passed=all(gate.passed for gate in gates.values()),
    )
    return SymbolOutcome(symbol, training, data.processor, evaluation)
