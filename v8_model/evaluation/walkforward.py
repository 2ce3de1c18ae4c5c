"""Walk-forward evaluation: the model recipe retrained on expanding windows, scored out of sample.

Fold k of K tests on a block of rows as long as the main split's test segment; the blocks sit back
to back and the last one *is* the main split's test segment, so the last fold's model is the
promoted model (trained once). Each earlier fold trains on every row before its test block, less
the same embargo the main split uses, cut into training and validation at the main split's ratio
(train_fraction : val_fraction, 70:15 by default) with an embargo between them. Each fold fits
its own processor (scaler and label thresholds) on its own training rows, picks its epoch on its
own validation rows, and its confidence threshold on those validation rows too; its test rows are
seen by nothing it chose.

The skill statistic and the backtest then run on the folds' concatenated test rows (more rows,
more power), and each fold's own figures are kept to show stability over time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from v8_model.config import TrainConfig
from v8_model.data.split import DEFAULT_FRACTIONS, ChronologicalSplit, chronological_split
from v8_model.evaluation.backtest import choose_threshold, run_backtest
from v8_model.evaluation.gates import softmax
from v8_model.evaluation.metrics import FoldWorth, Worth
from v8_model.evaluation.worth import directional_skill, rank_ic


@dataclass
class FoldPredictions:
    """What one fold's model said about its validation and test rows, and what happened."""

    train_rows: int
    validation_probabilities: np.ndarray
    validation_returns: np.ndarray
    test_probabilities: np.ndarray
    test_returns: np.ndarray
    test_start: str
    test_end: str


def probabilities_of(logits: np.ndarray) -> np.ndarray:
    """Softmax of logits; non-finite logits become finite (the no_nan_inf gate reports them)."""
    return softmax(np.nan_to_num(logits, nan=0.0, posinf=1e6, neginf=-1e6))


def _fold_split(
    main: ChronologicalSplit, earlier: int, fractions: tuple[float, float, float]
) -> ChronologicalSplit:
    """The fold whose test block ends `earlier` blocks before the main split's test segment."""
    test_rows = main.test.stop - main.test.start
    embargo = main.embargo
    train_share = fractions[0] / (fractions[0] + fractions[1])
    test_start = main.test.start - earlier * test_rows
    before_test = test_start - embargo  # rows left for training and validation
    n_train = max(0, int((before_test - embargo) * train_share))
    return ChronologicalSplit(
        train=slice(0, n_train),
        validation=slice(n_train + embargo, max(before_test, n_train + embargo)),
        test=slice(test_start, test_start + test_rows),
        embargo=embargo,
    )


def _usable(split: ChronologicalSplit) -> bool:
    """A fold trains on at least as many rows as it tests on, and validates on some."""
    test_rows = split.test.stop - split.test.start
    return split.train.stop >= test_rows and split.validation.stop > split.validation.start


def fold_splits(
    n_rows: int,
    folds: int,
    horizon: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> list[ChronologicalSplit]:
    """The K folds' splits, oldest first; the last is the main split of `fractions`.

    ValueError naming the `folds` setting when the first fold would train on fewer rows than
    it tests on.
    """
    main = chronological_split(n_rows, fractions=fractions, horizon=horizon)
    splits = [_fold_split(main, earlier, fractions) for earlier in range(folds - 1, 0, -1)]
    if splits and not _usable(splits[0]):
        most = 1
        while _usable(_fold_split(main, most, fractions)):
            most += 1
        test_rows = main.test.stop - main.test.start
        raise ValueError(
            f"training setting folds={folds} is too many for {n_rows:,} rows: the first fold "
            f"would train on {splits[0].train.stop:,} rows, fewer than its {test_rows:,} test "
            f"rows; use at most {most} fold(s) or supply more history"
        )
    return [*splits, main]


def assess_worth(folds: list[FoldPredictions], config: TrainConfig, horizon: int) -> Worth:
    """Skill and backtest on the concatenated test rows, with per-fold figures."""
    costs = {"fee_bps": config.fee_bps, "slippage_bps": config.slippage_bps}
    fold_rows, thresholds = [], []
    for number, fold in enumerate(folds, start=1):
        threshold = choose_threshold(
            fold.validation_probabilities,
            fold.validation_returns,
            horizon=horizon,
            long_only=config.long_only,
            min_confidence=config.min_confidence,
            **costs,
        )
        figures, _ = run_backtest(
            fold.test_probabilities,
            fold.test_returns,
            horizon=horizon,
            threshold=threshold,
            long_only=config.long_only,
            **costs,
        )
        thresholds.append(np.full(len(fold.test_returns), threshold))
        fold_rows.append(
            FoldWorth(
                fold=number,
                train_rows=fold.train_rows,
                validation_rows=len(fold.validation_returns),
                test_rows=len(fold.test_returns),
                test_start=fold.test_start,
                test_end=fold.test_end,
                confidence_threshold=threshold,
                rank_ic=rank_ic(
                    fold.test_probabilities[:, 2] - fold.test_probabilities[:, 0],
                    fold.test_returns,
                ),
                backtest=figures,
            )
        )
    probabilities = np.concatenate([fold.test_probabilities for fold in folds])
    returns = np.concatenate([fold.test_returns for fold in folds])
    skill = directional_skill(probabilities, returns, horizon=horizon, alpha=config.skill_alpha)
    figures, curve = run_backtest(
        probabilities,
        returns,
        horizon=horizon,
        threshold=np.concatenate(thresholds),
        long_only=config.long_only,
        **costs,
    )
    return Worth(
        skill=skill,
        backtest=figures,
        folds=fold_rows,
        equity_curve=curve,
        fee_bps=config.fee_bps,
        slippage_bps=config.slippage_bps,
        long_only=config.long_only,
        horizon=horizon,
    )


def fold_predictions(
    predict: Callable[[np.ndarray], np.ndarray],
    train_rows: int,
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, pd.Series],
) -> FoldPredictions:
    """A fold's predictions from its model's `predict` (features → logits)."""
    validation_features, validation_returns = validation
    test_features, test_returns, test_timestamps = test
    return FoldPredictions(
        train_rows=train_rows,
        validation_probabilities=probabilities_of(predict(validation_features)),
        validation_returns=validation_returns,
        test_probabilities=probabilities_of(predict(test_features)),
        test_returns=test_returns,
        test_start=str(test_timestamps.iloc[0]) if len(test_timestamps) else "",
        test_end=str(test_timestamps.iloc[-1]) if len(test_timestamps) else "",
    )
