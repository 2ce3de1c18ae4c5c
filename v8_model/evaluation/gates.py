"""The quality gates and the test-segment metrics reported beside them.

Five gates check the model's form on the test segment (`evaluate_gates`); the sixth,
`directional_skill`, checks its worth on the walk-forward folds' test rows
(`v8_model.evaluation.worth`).

Each gate is a `Gate` below, defined once with its number, name, demand and threshold (its
numbers are constants beside it): the gate functions, the asset checks, the report, the alerts
and the figures all read them from here.

Every function is pure: arrays in, numbers out. Gates are evaluated on the test segment only —
data the model never trained on and that never chose its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v8_model.defaults import CLASS_NAMES
from v8_model.evaluation.metrics import GateResult, ReliabilityBin, TestMetrics

NORMALIZATION_TOLERANCE = 0.1
MAX_ABS_LOGIT = 15.0
OVERCONFIDENT_PROBABILITY = 0.99
MAX_OVERCONFIDENT_SHARE = 0.10
CLASS_SHARE_BAND = (0.15, 0.60)
ECE_BINS = 15


@dataclass(frozen=True)
class Gate:
    """One quality gate, defined once: the checks, the report, the alerts and the recorded
    results all take its name, description and threshold from here."""

    number: int
    name: str
    demand: str  # what the gate demands, in words, from its thresholds
    threshold: str  # the pass rule as metrics.json records it; may name a setting, `{alpha:g}`

    @property
    def description(self) -> str:
        """The asset check's description: `gate N: <demand>`."""
        return f"gate {self.number}: {self.demand}"

    def result(self, *, passed: bool, value: float, details: dict, **settings) -> GateResult:
        """This gate's outcome; `settings` fill the threshold's placeholders."""
        return GateResult(
            name=self.name,
            passed=passed,
            value=value,
            threshold=self.threshold.format(**settings),
            details=details,
        )


_LOW_SHARE, _HIGH_SHARE = CLASS_SHARE_BAND
FEATURE_NORMALIZATION = Gate(
    1,
    "feature_normalization",
    f"scaled test features have |mean| < {NORMALIZATION_TOLERANCE} and |std - 1| < "
    f"{NORMALIZATION_TOLERANCE}",
    f"|mean| and |std - 1| < {NORMALIZATION_TOLERANCE}",
)
LOGIT_RANGE = Gate(
    2,
    "logit_range",
    f"every test logit within ±{MAX_ABS_LOGIT:g}",
    f"|logit| < {MAX_ABS_LOGIT:g}",
)
CONFIDENCE_CALIBRATION = Gate(
    3,
    "confidence_calibration",
    f"under {MAX_OVERCONFIDENT_SHARE:.0%} of test samples with max probability > "
    f"{OVERCONFIDENT_PROBABILITY}",
    f"share with max prob > {OVERCONFIDENT_PROBABILITY} < {MAX_OVERCONFIDENT_SHARE}",
)
CLASS_BALANCE = Gate(
    4,
    "class_balance",
    f"every class predicted for {_LOW_SHARE:.0%}-{_HIGH_SHARE:.0%} of test samples",
    f"every class share in ({_LOW_SHARE}, {_HIGH_SHARE})",
)
NO_NAN_INF = Gate(5, "no_nan_inf", "no NaN or Inf logits", "no NaN or Inf logits")
DIRECTIONAL_SKILL = Gate(
    6,
    "directional_skill",
    "out-of-sample rank IC of P(BUY) - P(SELL) against the forward return is > 0, one-sided "
    "block-bootstrap p below the skill_alpha setting",
    "rank IC > 0 with one-sided block-bootstrap p < {alpha:g}",
)
# The model's form on the test segment (`evaluate_gates`), in order.
FORM_GATES = (FEATURE_NORMALIZATION, LOGIT_RANGE, CONFIDENCE_CALIBRATION, CLASS_BALANCE, NO_NAN_INF)
# Every gate a model must pass to be promoted: its form, then its out-of-sample direction.
GATES = (*FORM_GATES, DIRECTIONAL_SKILL)
FORM_GATE_NAMES = tuple(gate.name for gate in FORM_GATES)
GATE_NAMES = tuple(gate.name for gate in GATES)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def gate_feature_normalization(scaled_features: np.ndarray) -> GateResult:
    """Gate 1: overall |mean| and |std − 1| of the scaled test features within tolerance."""
    mean = float(np.mean(scaled_features))
    std = float(np.std(scaled_features))
    per_feature_mean = np.abs(scaled_features.mean(axis=0))
    value = max(abs(mean), abs(std - 1.0))
    return FEATURE_NORMALIZATION.result(
        passed=bool(value < NORMALIZATION_TOLERANCE),
        value=value,
        details={
            "mean": mean,
            "std": std,
            "worst_feature_index": int(per_feature_mean.argmax()),
            "worst_feature_abs_mean": float(per_feature_mean.max()),
        },
    )


def gate_logit_range(logits: np.ndarray) -> GateResult:
    """Gate 2: every logit lies strictly within ±MAX_ABS_LOGIT."""
    low, high = float(np.nanmin(logits)), float(np.nanmax(logits))
    value = max(abs(low), abs(high))
    return LOGIT_RANGE.result(
        passed=bool(value < MAX_ABS_LOGIT),
        value=value,
        details={"min_logit": low, "max_logit": high},
    )


def gate_confidence_calibration(logits: np.ndarray) -> GateResult:
    """Gate 3: few samples have a max softmax probability above OVERCONFIDENT_PROBABILITY."""
    max_probability = softmax(logits).max(axis=1)
    share = float(np.mean(max_probability > OVERCONFIDENT_PROBABILITY))
    return CONFIDENCE_CALIBRATION.result(
        passed=bool(share < MAX_OVERCONFIDENT_SHARE),
        value=share,
        details={"mean_max_probability": float(max_probability.mean())},
    )


def class_mix(predictions: np.ndarray) -> dict[str, float]:
    """Share of samples predicted as each class, by class name."""
    counts = np.bincount(predictions, minlength=len(CLASS_NAMES))
    shares = counts / len(predictions)
    return {name: float(share) for name, share in zip(CLASS_NAMES, shares, strict=True)}


def gate_class_balance(predictions: np.ndarray) -> GateResult:
    """Gate 4: every class is predicted for a share of samples inside CLASS_SHARE_BAND."""
    mix = class_mix(predictions)
    low, high = CLASS_SHARE_BAND
    # The reported value is the share farthest outside (or closest to leaving) the band.
    worst = min(mix.values(), key=lambda share: min(share - low, high - share))
    return CLASS_BALANCE.result(
        passed=all(low < share < high for share in mix.values()),
        value=float(worst),
        details={f"share_{name}": share for name, share in mix.items()},
    )


def gate_no_nan_inf(logits: np.ndarray) -> GateResult:
    """Gate 5: no NaN and no Inf among the logits."""
    n_nan, n_inf = int(np.isnan(logits).sum()), int(np.isinf(logits).sum())
    return NO_NAN_INF.result(
        passed=n_nan + n_inf == 0,
        value=float(n_nan + n_inf),
        details={"nan_count": n_nan, "inf_count": n_inf},
    )


def evaluate_gates(scaled_features: np.ndarray, logits: np.ndarray) -> dict[str, GateResult]:
    """The five form gates on the test segment, keyed by name in FORM_GATE_NAMES order."""
    finite_rows = np.isfinite(logits).all(axis=1)
    finite_logits = logits[finite_rows] if finite_rows.any() else np.zeros((1, logits.shape[1]))
    predictions = np.argmax(np.nan_to_num(logits, nan=-np.inf), axis=1)
    results = [
        gate_feature_normalization(scaled_features),
        gate_logit_range(finite_logits),
        gate_confidence_calibration(finite_logits),
        gate_class_balance(predictions),
        gate_no_nan_inf(logits),
    ]
    return {result.name: result for result in results}


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[float, list[ReliabilityBin]]:
    """ECE over equal-width confidence bins, and the per-bin table for a reliability diagram."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    ece, table = 0.0, []
    for index in range(n_bins):
        in_bin = bins == index
        count = int(in_bin.sum())
        if count == 0:
            continue
        bin_confidence = float(confidence[in_bin].mean())
        bin_accuracy = float(correct[in_bin].mean())
        ece += count / len(labels) * abs(bin_confidence - bin_accuracy)
        table.append(
            ReliabilityBin(
                lower=float(edges[index]),
                upper=float(edges[index + 1]),
                confidence=bin_confidence,
                accuracy=bin_accuracy,
                count=count,
            )
        )
    return float(ece), table


def evaluation_metrics(
    logits: np.ndarray, labels: np.ndarray, train_labels: np.ndarray
) -> TestMetrics:
    """Accuracy and macro-F1 against the majority-class baseline, ECE, class mix, confusion."""
    class_ids = list(range(len(CLASS_NAMES)))
    safe_logits = np.nan_to_num(logits, nan=0.0, posinf=1e6, neginf=-1e6)
    # Imported here: the Dagster definitions import this module for the gate names only.
    from sklearn.metrics import confusion_matrix, f1_score

    probabilities = softmax(safe_logits)
    predictions = probabilities.argmax(axis=1)
    majority_class = int(np.bincount(train_labels, minlength=len(CLASS_NAMES)).argmax())
    baseline = np.full_like(labels, majority_class)
    ece, reliability = expected_calibration_error(probabilities, labels)
    return TestMetrics(
        test_rows=int(len(labels)),
        test_accuracy=float(np.mean(predictions == labels)),
        baseline_accuracy=float(np.mean(baseline == labels)),
        baseline_class=CLASS_NAMES[majority_class],
        macro_f1=float(
            f1_score(labels, predictions, labels=class_ids, average="macro", zero_division=0)
        ),
        baseline_macro_f1=float(
            f1_score(labels, baseline, labels=class_ids, average="macro", zero_division=0)
        ),
        ece=ece,
        reliability=reliability,
        class_mix=class_mix(predictions),
        true_class_mix=class_mix(labels),
        confusion_matrix=confusion_matrix(labels, predictions, labels=class_ids).tolist(),
    )
