"""One symbol from its features dataset to an evaluated model: split, scale, label, train, gate.

The processor sees the training segment only (`v8_model.data.segments`); early stopping sees
validation only; the gates and the evaluation record see the test segment only. Then the earlier
walk-forward folds (`v8_model.evaluation.walkforward`) train through the same loop, each on a
dataset read afresh and freed before it trains, and the sixth gate, directional skill, is measured
on all
folds' test rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from v8_model.config import TrainConfig
from v8_model.data.processor import V8FeatureProcessor
from v8_model.data.segments import FeatureMatrix, PreparedData, prepare_segments
from v8_model.data.settings import DataSettings
from v8_model.data.split import ChronologicalSplit
from v8_model.evaluation.gates import DIRECTIONAL_SKILL, evaluate_gates, evaluation_metrics
from v8_model.evaluation.metrics import EpochStats, Evaluation, SegmentRows, metrics_fields
from v8_model.evaluation.walkforward import (
    FoldPredictions,
    assess_worth,
    fold_predictions,
    fold_splits,
)
from v8_model.evaluation.worth import skill_gate
from v8_model.model.heap import release_freed_memory
from v8_model.model.loop import TrainResult, train_model
from v8_model.model.net import predict_logits


@dataclass
class SymbolOutcome:
    symbol: str
    training: TrainResult
    processor: V8FeatureProcessor
    evaluation: Evaluation
    predictions: FoldPredictions  # the main split's, i.e. the last walk-forward fold's


def train_and_evaluate(
    dataset: pd.DataFrame,
    *,
    symbol: str,
    config: TrainConfig | None = None,
    processor: V8FeatureProcessor | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> SymbolOutcome:
    """Train one symbol's model and measure it, with its six gates, on held-out rows."""
    return train_symbol(
        lambda rows=None: dataset if rows is None else dataset.iloc[:rows],
        symbol=symbol,
        config=config,
        processor=processor,
        on_epoch=on_epoch,
        checkpoint_dir=checkpoint_dir,
    )


def train_symbol(
    load_dataset: Callable[[int | None], pd.DataFrame | FeatureMatrix],
    *,
    symbol: str,
    config: TrainConfig | None = None,
    processor: V8FeatureProcessor | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_fold: Callable[[str], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> SymbolOutcome:
    """The main model, then the earlier folds, then worth.

    `load_dataset(rows)` returns the features dataset's first `rows` rows (all with None), as a
    frame or as a FeatureMatrix that becomes the segments' storage; it is called once per fold,
    for the rows that fold reaches, so that no features frame stays alive while a model trains.
    """
    config = config or TrainConfig()
    settings = DataSettings.of(config)
    # A given processor fitted with other split or label settings is refused here.
    data = prepare_segments(load_dataset(None), processor, symbol, settings=settings)
    horizon = settings.label_horizon
    # A bad `folds` fails before training.
    splits = fold_splits(data.rows, config.folds, horizon, settings.fractions)
    outcome = train_on_segments(
        data, symbol=symbol, config=config, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir
    )
    del data
    folds = []
    for number, split in enumerate(splits[:-1], start=1):
        release_freed_memory()  # so a fold's peak does not sit on the previous one's leftovers
        folds.append(train_fold(load_dataset, split, symbol=symbol, config=config))
        if on_fold is not None:
            on_fold(
                f"symbol={symbol} fold={number}/{len(splits)} trained on "
                f"{folds[-1].train_rows} rows, tested {folds[-1].test_start} to "
                f"{folds[-1].test_end}"
            )
    worth = assess_worth([*folds, outcome.predictions], config, horizon)
    gates = {**outcome.evaluation.gates, DIRECTIONAL_SKILL.name: skill_gate(worth.skill)}
    evaluation = dataclasses.replace(
        outcome.evaluation,
        gates=gates,
        all_gates_passed=all(gate.passed for gate in gates.values()),
        worth=worth,
    )
    return dataclasses.replace(outcome, evaluation=evaluation)


def train_fold(
    load_dataset: Callable[[int | None], pd.DataFrame | FeatureMatrix],
    split: ChronologicalSplit,
    *,
    symbol: str,
    config: TrainConfig,
) -> FoldPredictions:
    """One earlier walk-forward fold: its own processor, its own training, its predictions."""
    settings = DataSettings.of(config)
    # Rows after the fold's test block (and its last forward returns) are never read.
    rows = split.test.stop + settings.label_horizon
    data = prepare_segments(load_dataset(rows), None, symbol, split, settings)
    return _predictions(_train(data, config), data)


def _train(
    data: PreparedData,
    config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """The recipe on one split's segments: fit on train, early-stop on validation."""
    return train_model(
        data.train.features,
        data.train.labels,
        data.validation.features,
        data.validation.labels,
        config,
        on_epoch,
        checkpoint_dir,
    )


def _predictions(training: TrainResult, data: PreparedData) -> FoldPredictions:
    return fold_predictions(
        lambda features: predict_logits(training.model, features),
        len(data.train.labels),
        (data.validation.features, data.validation.forward_returns),
        (data.test.features, data.test.forward_returns, data.test.timestamps),
    )


def train_on_segments(
    data: PreparedData,
    *,
    symbol: str,
    config: TrainConfig | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> SymbolOutcome:
    """The main split's model with its five form gates, on segments already prepared (the
    dataset itself no longer needed); `train_symbol` adds the folds and the skill gate."""
    config = config or TrainConfig()
    training = _train(data, config, on_epoch, checkpoint_dir)
    predictions = _predictions(training, data)
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
    return SymbolOutcome(symbol, training, data.processor, evaluation, predictions)
