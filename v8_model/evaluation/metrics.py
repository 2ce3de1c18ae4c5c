"""What an evaluation measures, as one typed record: `Evaluation`, stored as `metrics.json`.

The entry point builds it, writes it, and reports it through Dagster Pipes; the assets, the gate
report and the figures read it back with `Evaluation.from_json`, which refuses unknown, missing or
mistyped keys with an error naming the file. The record is flat JSON, each nested part its own
dataclass. To add a section, add a dataclass and a field `name: Section | None = None` at the
end of `Evaluation` (as `worth` was): a record written before the section existed still reads,
with the section None.

No torch import here: the Dagster side reads records without loading the trainer.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

from v8_model.config import TrainConfig
from v8_model.data.labels import LabelThresholds
from v8_model.record import record_from_dict, strict_json

# A number as the job's log lines print it; SageMaker's metric definitions capture it after
# `name=` (`metric_regex`).
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
# The per-epoch line that `EpochStats.line` writes and `EpochStats.parse` reads (a loss may be
# `nan`, which the reader keeps: a user must see it).
_EPOCH_LINE = re.compile(
    r"epoch=(?P<epoch>\d+) train_loss=(?P<train_loss>\S+) val_loss=(?P<val_loss>\S+) "
    r"val_acc=(?P<val_acc>\S+) lr=(?P<learning_rate>\S+)"
)


def metric_regex(name: str) -> str:
    """The regex that captures the number after `name=` in a log line."""
    return rf"{name}=({_NUMBER})"


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    learning_rate: float

    def line(self) -> str:
        """The parseable per-epoch line (SageMaker metric definitions match these names)."""
        return (
            f"epoch={self.epoch} train_loss={self.train_loss:.4f} val_loss={self.val_loss:.4f} "
            f"val_acc={self.val_acc:.4f} lr={self.learning_rate:.6f}"
        )

    @classmethod
    def parse(cls, text: str) -> EpochStats | None:
        """The epoch line found in `text` (a log message), or None when there is none."""
        found = _EPOCH_LINE.search(text)
        if found is None:
            return None
        return cls(
            epoch=int(found["epoch"]),
            **{name: float(found[name]) for name in _EPOCH_LINE.groupindex if name != "epoch"},
        )


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: the measured value, the threshold it was held to, and the details."""

    name: str
    passed: bool
    value: float
    threshold: str
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of the reliability diagram."""

    lower: float
    upper: float
    confidence: float
    accuracy: float
    count: int


@dataclass(frozen=True, kw_only=True)
class TestMetrics:
    """Accuracy and macro-F1 against the majority-class baseline, calibration, class mix."""

    __test__ = False  # not a pytest test class despite the name

    test_rows: int
    test_accuracy: float
    baseline_accuracy: float
    baseline_class: str
    macro_f1: float
    baseline_macro_f1: float
    ece: float
    reliability: list[ReliabilityBin]
    class_mix: dict[str, float]
    true_class_mix: dict[str, float]
    confusion_matrix: list[list[int]]


@dataclass(frozen=True)
class SegmentRows:
    train: int
    validation: int
    test: int


@dataclass(frozen=True)
class DirectionalSkill:
    """Rank IC of P(BUY) - P(SELL) against the realised forward return, on out-of-sample rows.

    `p_value` is one-sided (skill > 0) from a stationary bootstrap with mean block length
    `block_size` (at least the label horizon); the interval is the bootstrap's 95% percentile
    interval. `calls` counts the rows whose top class is BUY or SELL.
    """

    rank_ic: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    passed: bool
    rows: int
    calls: int
    block_size: int
    bootstrap_reps: int


@dataclass(frozen=True)
class BacktestFigures:
    """Trading the model's calls: every return is a fraction (0.05 = +5%), costs in basis points.

    Each trade is held for the label horizon; `net_return` pays `cost_bps_per_side` on entry
    and on exit; `buy_and_hold_return` covers the same minutes; `sharpe` is annualised from the
    per-minute net returns (flat minutes count as 0); `max_drawdown` is the worst fall of net
    equity from its running peak; `turnover` is the notional traded per day in multiples of
    equity; `break_even_fee_bps` is the total cost per side at which `net_return` is zero.
    """

    gross_return: float
    net_return: float
    buy_and_hold_return: float
    trades: int
    hit_rate: float
    exposure: float
    sharpe: float
    max_drawdown: float
    turnover: float
    break_even_fee_bps: float
    cost_bps_per_side: float
    rows: int
    note: str = ""


@dataclass(frozen=True)
class FoldWorth:
    """One walk-forward fold: its segment sizes, test span, chosen threshold and figures."""

    fold: int
    train_rows: int
    validation_rows: int
    test_rows: int
    test_start: str
    test_end: str
    confidence_threshold: float
    rank_ic: float
    backtest: BacktestFigures


@dataclass(frozen=True)
class EquityCurve:
    """Equity (1.0 at the start) sampled at `bars`, minutes into the concatenated test rows."""

    bars: list[int]
    net: list[float]
    gross: list[float]
    buy_and_hold: list[float]


@dataclass(frozen=True)
class Worth:
    """Whether the model is worth trading, measured on the folds' concatenated test rows."""

    skill: DirectionalSkill
    backtest: BacktestFigures
    folds: list[FoldWorth]
    equity_curve: EquityCurve
    fee_bps: float
    slippage_bps: float
    long_only: bool
    horizon: int


@dataclass(frozen=True, kw_only=True)
class Evaluation(TestMetrics):
    """One symbol's trained model and its six gates: five of form on its held-out test segment,
    directional skill (with the backtest, its worth) on the walk-forward folds' test rows."""

    symbol: str
    rows: int
    first_timestamp: str
    last_timestamp: str
    segment_rows: SegmentRows
    embargo_rows: int
    test_start: str
    label_thresholds: LabelThresholds
    train_seconds: float
    device: str
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    # None only in a record written before the figures existed; the figures need it.
    history: list[EpochStats] | None = None
    hyperparameters: TrainConfig
    gates: dict[str, GateResult]
    all_gates_passed: bool
    # Walk-forward skill and backtest; None only in a record written before they existed.
    worth: Worth | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return strict_json(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: object, source: str = "evaluation") -> Evaluation:
        """The record in `data`; RecordError naming `source` on unknown, missing or bad keys."""
        return record_from_dict(cls, data, source)

    @classmethod
    def from_json(cls, text: str, source: str = "evaluation") -> Evaluation:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from error
        return cls.from_dict(data, source)

    def summary(self) -> dict:
        """The headline figures the training summary lists per symbol."""
        keys = (
            "test_accuracy",
            "baseline_accuracy",
            "macro_f1",
            "ece",
            "class_mix",
            "train_seconds",
            "device",
            "all_gates_passed",
            "gates",
        )
        record = self.to_dict()
        return {key: record[key] for key in keys}


def metrics_fields(metrics: TestMetrics) -> dict:
    """The TestMetrics part of a record, as keyword arguments for `Evaluation`."""
    return {item.name: getattr(metrics, item.name) for item in fields(TestMetrics)}
