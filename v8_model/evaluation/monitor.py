"""After promotion: is the serving model still what it promised, on candles it never saw?

A promoted version is a claim about the future made from the past (docs/design.md,
"Monitoring"). This module checks the claim on the *fresh* rows only: the rows after the last row
of the dataset the version was trained on. Its training, validation and threshold choice all lie
inside that dataset, and so do the test rows its promise was measured on, so no fresh row has
been seen by anything that shaped the version or its promise.

Three questions, each answered by one function and judged against `MonitorSettings`:

- realized skill (`assess_realized_skill`): the rank IC of the version's direction score against
  the realised forward return on the fresh rows, with the skill gate's stationary bootstrap
  (`v8_model.evaluation.worth`). It fails when the fresh rows show the promise is gone: the realized
  IC lies significantly below the promised one (a one-sided z-test on the difference whose variance
  adds
  the realized bootstrap variance and the promised interval's), or is significantly negative
  (the skill gate's test, mirrored). Each test runs at alpha / 2, so on a market that did not
  change the check raises a false alarm with probability at most alpha (Bonferroni);
  bench/monitor_false_alarms.py measures it. Below `min_fresh_rows` it passes and says the window
  is too short to tell.
- feature drift (`assess_feature_drift`): the population stability index (PSI) of each feature
  between the training segment and the fresh rows, over the training segment's deciles. PSI and
  not a Wasserstein distance: it reads the same on every feature whatever its unit or bounds
  (oscillators in [0, 100], ratios, z-scores), only through the training window's quantiles, and
  its usual bands (0.1 moderate, 0.25 major shift) are the convention operators know. A feature
  drifts when its PSI exceeds `psi_threshold`; the check fails when more than
  `max_drifted_share` of the features drift. One feature over the line is common on a short
  window (a slow feature covers few of its own cycles); a change of structure moves a family.
  The four calendar features are left out: they are the clock, and a window of days covers only
  some weekdays. The features are scale-free, so a level change in price or volume moves none.
- model age (`model_age_days`): days since the version was promoted.

No Dagster and no torch here: the caller scores the rows with the version's own model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from v8_model.data.features import FEATURE_NAMES
from v8_model.data.segments import forward_log_returns
from v8_model.defaults import MINUTES_PER_DAY
from v8_model.evaluation.backtest import run_backtest
from v8_model.evaluation.metrics import BacktestFigures, DirectionalSkill, Evaluation
from v8_model.evaluation.worth import (
    block_size,
    bootstrap_replicates,
    correlation,
    direction_scores,
    rank_ic,
    standardised_ranks,
)
from v8_model.record import RecordError, record_from_dict, strict_json

SEVERITIES = ("WARN", "ERROR")
CALENDAR_FEATURES = ("minute_of_day_sin", "minute_of_day_cos", "day_of_week_sin", "day_of_week_cos")
PSI_BINS = 10  # deciles of the training segment
PSI_FLOOR = 1e-4  # share given to an empty bin, so that the log ratio stays finite
# A fresh row is out of distribution when its largest scaled feature (in training-segment
# standard deviations) exceeds this quantile of the training segment's own: ~0.1% of rows when
# nothing changed (the spirit of FreqAI's Dissimilarity Index).
OOD_QUANTILE = 0.999
ROLLING_POINTS = 200  # points of the rolling realized-skill line kept in the record
Z_95 = float(norm.ppf(0.975))


class MonitorInputError(ValueError):
    """Fresh data that cannot be monitored; the message names the file and what to do."""


@dataclass(frozen=True)
class MonitorSettings:
    """The monitor's thresholds and the severities of its three checks."""

    # Realized skill needs at least this many fresh rows. One day of 1-minute rows holds about
    # 96 independent 15-minute horizons: a rank IC's standard error is then about 0.1.
    min_fresh_rows: int = MINUTES_PER_DAY
    skill_alpha: float = 0.01  # the realized_skill check's false-alarm rate on an unchanged market
    # Drift needs this many fresh rows. On one day a slow feature covers few of its own cycles:
    # on unchanged synthetic markets up to 26% of the features passed PSI 0.25 over one day,
    # at most 4% over three (six markets each).
    min_drift_rows: int = 3 * MINUTES_PER_DAY
    psi_threshold: float = 0.25  # the usual "major shift" band
    max_drifted_share: float = 0.25  # of the non-calendar features
    max_model_age_days: float = 7.0
    max_gap_minutes: int = 60  # the longest step allowed between fresh rows
    rolling_rows: int = MINUTES_PER_DAY  # the window of the rolling realized rank IC in the picture
    # Champion / challenger (v8_model.evaluation.champion): the one-sided level at which a
    # challenger is significantly worse, and the shortest shared unseen window compared on.
    challenger_alpha: float = 0.01
    min_shared_rows: int = MINUTES_PER_DAY
    realized_skill_severity: str = "ERROR"
    feature_drift_severity: str = "WARN"
    model_age_severity: str = "WARN"

    def __post_init__(self) -> None:
        for name in ("realized_skill_severity", "feature_drift_severity", "model_age_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise ValueError(
                    f"monitor setting {name} must be one of {SEVERITIES}, "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("skill_alpha", "challenger_alpha"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(
                    f"monitor setting {name} must be in (0, 0.5), got {getattr(self, name)!r}"
                )
        for name in ("psi_threshold", "max_model_age_days"):
            if not getattr(self, name) > 0:
                raise ValueError(f"monitor setting {name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.max_drifted_share < 1.0:
            raise ValueError(
                "monitor setting max_drifted_share must be in [0, 1), got "
                f"{self.max_drifted_share!r}"
            )
        for name in (
            "min_fresh_rows",
            "min_drift_rows",
            "max_gap_minutes",
            "rolling_rows",
            "min_shared_rows",
        ):
            if not getattr(self, name) >= 1:
                raise ValueError(
                    f"monitor setting {name} must be >= 1, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True)
class MonitorWindow:
    """Row positions in a features dataset: the version's training segment and the fresh rows."""

    reference: slice
    fresh: slice


def monitor_window(
    dataset: pd.DataFrame,
    *,
    first_timestamp: str,
    last_timestamp: str,
    training_rows: int,
    max_gap: pd.Timedelta,
    source: str,
    version: str,
) -> MonitorWindow:
    """Where the version's training segment and the rows after its dataset lie in `dataset`.

    `first_timestamp` and `last_timestamp` bound the dataset the version was trained on;
    `training_rows` is its training segment's length. MonitorInputError, naming `source`, when
    the dataset ends before the version's data did, lacks the training segment, or has a gap
    longer than `max_gap` in the fresh rows (or between them and the training data).
    """
    stamps = dataset["timestamp"]
    first, last = pd.Timestamp(first_timestamp), pd.Timestamp(last_timestamp)
    if len(stamps) == 0 or stamps.iloc[-1] < last:
        end = "no rows" if len(stamps) == 0 else f"rows up to {stamps.iloc[-1]}"
        raise MonitorInputError(
            f"{source} holds {end}, older than the data production version {version} was trained "
            f"on (up to {last}): there is nothing after its training to monitor. Supply candles "
            f"that continue past {last} (the candles of the training run, extended)."
        )
    start = int(stamps.searchsorted(first))
    if start >= len(stamps) or stamps.iloc[start] != first:
        raise MonitorInputError(
            f"{source} does not contain the first training row of production version {version} "
            f"({first}): drift is measured against that training segment. Supply candles that "
            "cover the version's training data and continue after it."
        )
    if start + training_rows > len(stamps):
        raise MonitorInputError(
            f"{source} holds {len(stamps) - start} rows from {first}, fewer than the "
            f"{training_rows} training rows of version {version}"
        )
    fresh_start = int(stamps.searchsorted(last, side="right"))
    window = stamps.iloc[max(fresh_start - 1, 0) :]
    steps = window.diff().iloc[1:]
    too_long = steps[steps > max_gap]
    if len(too_long):
        at = too_long.index[0]
        raise MonitorInputError(
            f"{source}: {len(too_long)} gap(s) longer than {max_gap} after the training data of "
            f"version {version}, the first from {stamps.loc[at - 1]} to {stamps.loc[at]}: the "
            "forward returns would span the gap. Supply candles without the gap, or raise the "
            "monitor setting max_gap_minutes to accept a known outage."
        )
    return MonitorWindow(
        reference=slice(start, start + training_rows), fresh=slice(fresh_start, len(stamps))
    )


@dataclass(frozen=True)
class RealizedSkill:
    """The version's rank IC on the fresh rows, against what it promised at promotion."""

    rows: int
    rank_ic: float | None  # None below 2 horizons of rows
    rank_ic_low: float | None  # the bootstrap's 95% interval; None below min_rows
    rank_ic_high: float | None
    promised_rank_ic: float
    promised_low: float
    promised_high: float
    p_below_promised: float | None
    p_negative: float | None
    alpha: float
    min_rows: int
    block_size: int
    passed: bool
    reason: str


def assess_realized_skill(
    probabilities: np.ndarray,
    forward_returns: np.ndarray,
    *,
    horizon: int,
    promised: DirectionalSkill,
    alpha: float,
    min_rows: int,
) -> RealizedSkill:
    """Realized skill on fresh rows (`probabilities` rows × SELL/HOLD/BUY) and its verdict."""
    if len(probabilities) != len(forward_returns) or not np.all(np.isfinite(forward_returns)):
        raise ValueError("one finite forward return per fresh row with probabilities is needed")
    rows = len(forward_returns)
    scores = direction_scores(probabilities) if rows else np.zeros(0)
    base = {
        "rows": rows,
        "promised_rank_ic": promised.rank_ic,
        "promised_low": promised.ci_low,
        "promised_high": promised.ci_high,
        "alpha": alpha,
        "min_rows": min_rows,
    }
    if rows < max(min_rows, 2 * horizon):
        return RealizedSkill(
            **base,
            rank_ic=rank_ic(scores, forward_returns) if rows >= 2 * horizon else None,
            rank_ic_low=None,
            rank_ic_high=None,
            p_below_promised=None,
            p_negative=None,
            block_size=0,
            passed=True,
            reason=f"not enough fresh rows yet ({rows} < {max(min_rows, 2 * horizon)}): "
            "too few to tell the promised skill from noise",
        )
    u, v = standardised_ranks(scores), standardised_ranks(forward_returns)
    statistic = correlation(u, v)
    block = block_size(u * v, horizon)
    replicates = bootstrap_replicates(correlation, (u, v), block=block)
    low, high = (float(x) for x in np.quantile(replicates, [0.025, 0.975]))
    # The promise is itself an estimate: its interval's spread joins the realized one's.
    promised_sd = max(promised.ci_high - promised.ci_low, 0.0) / (2 * Z_95)
    spread = math.hypot(float(replicates.std(ddof=1)), promised_sd)
    gap = statistic - promised.rank_ic
    z = gap / spread if spread > 0 else (math.copysign(math.inf, gap) if gap else 0.0)
    p_below = float(norm.cdf(z))
    # Centred on the observed IC, the replicates stand for the IC under H0: skill = 0.
    p_negative = float(
        (1 + np.count_nonzero(replicates - statistic <= statistic)) / (len(replicates) + 1)
    )
    below, negative = p_below < alpha / 2, p_negative < alpha / 2
    figures = (
        f"realized rank IC {statistic:+.4f} (95% {low:+.4f} to {high:+.4f}) on {rows} fresh rows; "
        f"promised {promised.rank_ic:+.4f} (95% {promised.ci_low:+.4f} to {promised.ci_high:+.4f})"
    )
    if below or negative:
        why = []
        if below:
            why.append(f"significantly below the promise (p = {p_below:.2g} < {alpha / 2:g})")
        if negative:
            why.append(f"significantly negative (p = {p_negative:.2g} < {alpha / 2:g})")
        reason = f"skill gone: {figures}; {' and '.join(why)}"
    else:
        reason = (
            f"{figures}; consistent with the promise (p below = {p_below:.2g}, "
            f"p negative = {p_negative:.2g}, each tested at {alpha / 2:g})"
        )
    return RealizedSkill(
        **base,
        rank_ic=statistic,
        rank_ic_low=low,
        rank_ic_high=high,
        p_below_promised=p_below,
        p_negative=p_negative,
        block_size=block,
        passed=not (below or negative),
        reason=reason,
    )


def population_stability(reference: np.ndarray, fresh: np.ndarray, bins: int = PSI_BINS) -> float:
    """PSI of `fresh` against `reference` over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return np.maximum(counts / max(len(values), 1), PSI_FLOOR)

    expected, actual = shares(reference), shares(fresh)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(frozen=True)
class FeatureDrift:
    rows: int
    reference_rows: int
    psi: dict[str, float]
    drifted_features: list[str]
    drifted_share: float
    ood_share: float  # fresh rows beyond the training segment's OOD_QUANTILE of max |z|
    psi_threshold: float
    max_drifted_share: float
    min_rows: int
    passed: bool
    reason: str


def assess_feature_drift(
    reference: pd.DataFrame,
    fresh: pd.DataFrame,
    *,
    scaled_reference: np.ndarray,
    scaled_fresh: np.ndarray,
    psi_threshold: float,
    max_drifted_share: float,
    min_rows: int,
) -> FeatureDrift:
    """PSI per feature (calendar features left out) and the share of out-of-distribution rows.

    `reference` and `fresh` hold the feature columns; `scaled_*` are the same rows through the
    version's processor (standard deviations of its training segment).
    """
    names = [name for name in reference.columns if name not in CALENDAR_FEATURES]
    rows = len(fresh)
    psi = (
        {
            name: population_stability(
                reference[name].to_numpy(np.float64), fresh[name].to_numpy(np.float64)
            )
            for name in names
        }
        if rows
        else {}
    )
    drifted = sorted(
        (name for name, value in psi.items() if value > psi_threshold), key=lambda n: -psi[n]
    )
    share = len(drifted) / len(names) if rows else 0.0
    reference_extreme = np.abs(scaled_reference).max(axis=1)
    limit = float(np.quantile(reference_extreme, OOD_QUANTILE))
    ood = float(np.mean(np.abs(scaled_fresh).max(axis=1) > limit)) if rows else 0.0
    base = {
        "rows": rows,
        "reference_rows": len(reference),
        "psi": psi,
        "drifted_features": drifted,
        "drifted_share": share,
        "ood_share": ood,
        "psi_threshold": psi_threshold,
        "max_drifted_share": max_drifted_share,
        "min_rows": min_rows,
    }
    if rows < min_rows:
        return FeatureDrift(
            **base,
            passed=True,
            reason=f"not enough fresh rows yet ({rows} < {min_rows}): PSI over deciles is noise "
            "on so few",
        )
    shown = ", ".join(f"{name} {psi[name]:.2f}" for name in drifted[:5])
    figures = (
        f"{len(drifted)} of {len(names)} features have PSI > {psi_threshold:g}"
        + (f" ({shown}{', …' if len(drifted) > 5 else ''})" if drifted else "")
        + f"; {ood:.1%} of {rows} fresh rows out of the training distribution"
    )
    passed = share <= max_drifted_share
    verdict = "within" if passed else "structure changed: more than"
    return FeatureDrift(
        **base,
        passed=passed,
        reason=f"{figures}; {verdict} the allowed share {max_drifted_share:.0%}",
    )


def model_age_days(promoted_at: str, now: pd.Timestamp) -> float:
    """Days from `promoted_at` (ISO 8601, UTC) to `now`."""
    return (now - pd.Timestamp(promoted_at)) / pd.Timedelta(days=1)


def rolling_rank_ic(
    scores: np.ndarray, forward_returns: np.ndarray, window: int, points: int = ROLLING_POINTS
) -> tuple[list[int], list[float]]:
    """The rank IC over a trailing `window` of rows, at up to `points` window ends."""
    if len(scores) < window:
        return [], []
    ends = np.unique(
        np.linspace(window, len(scores), min(points, len(scores) - window + 1)).astype(int)
    )
    return ends.tolist(), [
        rank_ic(scores[end - window : end], forward_returns[end - window : end]) for end in ends
    ]


@dataclass(frozen=True)
class MonitorOutcome:
    """One version checked on a features dataset's fresh rows: the three verdicts' inputs."""

    window: MonitorWindow
    scored: np.ndarray  # fresh row positions with a forward return (skill, trades, picture)
    scores: np.ndarray  # the direction score P(BUY) - P(SELL) at `scored`
    skill: RealizedSkill
    trading: BacktestFigures
    confidence_threshold: float
    drift: FeatureDrift
    rolling_ends: list[int]  # positions in `scored` where each rolling window ends
    rolling_rank_ic: list[float]


def evaluate_fresh(
    dataset: pd.DataFrame,
    evaluation: Evaluation,
    *,
    probabilities_at: Callable[[np.ndarray], np.ndarray],
    scaled_at: Callable[[np.ndarray], np.ndarray],
    settings: MonitorSettings,
    source: str,
    version: str,
) -> MonitorOutcome:
    """Check the version that `evaluation` describes on the rows of `dataset` after its data.

    `probabilities_at(positions)` gives the version's SELL/HOLD/BUY probabilities for rows of
    `dataset`, `scaled_at(positions)` its processor's scaled features (the caller holds the
    model). MonitorInputError when the dataset cannot be monitored (see `monitor_window`).
    """
    worth = evaluation.worth
    if worth is None:
        raise MonitorInputError(
            f"production version {version}'s metrics have no worth record (no promised skill to "
            "hold it to); promote a retrained model"
        )
    horizon = evaluation.label_thresholds.horizon
    window = monitor_window(
        dataset,
        first_timestamp=evaluation.first_timestamp,
        last_timestamp=evaluation.last_timestamp,
        training_rows=evaluation.segment_rows.train,
        max_gap=pd.Timedelta(minutes=settings.max_gap_minutes),
        source=source,
        version=version,
    )
    positions = np.arange(len(dataset))
    fresh, reference = positions[window.fresh], positions[window.reference]
    # Skill and trades need a forward return: the last `horizon` fresh rows wait for theirs.
    scored = fresh[fresh < len(dataset) - horizon]
    probabilities = probabilities_at(scored)
    returns = forward_log_returns(dataset["close"], horizon)[scored]
    skill = assess_realized_skill(
        probabilities,
        returns,
        horizon=horizon,
        promised=worth.skill,
        alpha=settings.skill_alpha,
        min_rows=settings.min_fresh_rows,
    )
    threshold = worth.folds[-1].confidence_threshold  # the serving model's, chosen on validation
    trading, _ = run_backtest(
        probabilities,
        returns,
        horizon=horizon,
        threshold=threshold,
        fee_bps=worth.fee_bps,
        slippage_bps=worth.slippage_bps,
        long_only=worth.long_only,
    )
    names = [name for name in dataset.columns if name in FEATURE_NAMES]
    drift = assess_feature_drift(
        dataset.iloc[reference][names],
        dataset.iloc[fresh][names],
        scaled_reference=scaled_at(reference),
        scaled_fresh=scaled_at(fresh),
        psi_threshold=settings.psi_threshold,
        max_drifted_share=settings.max_drifted_share,
        min_rows=settings.min_drift_rows,
    )
    scores = direction_scores(probabilities)
    ends, rolling = rolling_rank_ic(scores, returns, settings.rolling_rows)
    return MonitorOutcome(
        window=window,
        scored=scored,
        scores=scores,
        skill=skill,
        trading=trading,
        confidence_threshold=threshold,
        drift=drift,
        rolling_ends=ends,
        rolling_rank_ic=rolling,
    )


@dataclass(frozen=True)
class MonitorRecord:
    """monitor/{SYMBOL}_monitor.json: one evaluation of the serving version on fresh rows."""

    symbol: str
    production_version: str
    evaluated_at: str
    promoted_at: str
    trained_first_timestamp: str
    trained_last_timestamp: str
    fresh_first_timestamp: str | None
    fresh_last_timestamp: str | None
    rows: int  # fresh rows with a forward return: the ones realized skill is measured on
    rank_ic: float | None
    rank_ic_low: float | None
    rank_ic_high: float | None
    promised_rank_ic: float
    promised_rank_ic_low: float
    promised_rank_ic_high: float
    p_below_promised: float | None
    p_negative: float | None
    hit_rate: float
    net_return: float
    gross_return: float
    buy_and_hold_return: float
    trades: int
    confidence_threshold: float
    cost_bps_per_side: float
    feature_psi: dict[str, float]
    drifted_features: list[str]
    drifted_share: float
    ood_share: float
    model_age_days: float
    realized_skill_passed: bool
    realized_skill_reason: str
    feature_drift_passed: bool
    feature_drift_reason: str
    model_age_passed: bool
    settings: dict[str, float] = field(default_factory=dict)
    # The picture: rolling rank IC over `settings["rolling_rows"]` rows, by the window's last row.
    rolling_timestamps: list[str] = field(default_factory=list)
    rolling_rank_ic: list[float] = field(default_factory=list)

    def to_json(self) -> str:
        return strict_json(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str, source: str) -> MonitorRecord:
        """The record in `text`; MonitorInputError naming `source` when it is not one."""
        try:
            return record_from_dict(cls, json.loads(text), source)
        except (json.JSONDecodeError, UnicodeDecodeError, RecordError) as error:
            raise MonitorInputError(
                f"{source}: corrupt monitor record ({error}); delete it and materialize "
                "`model_monitor` (run monitor_pipeline) for this symbol, which rewrites it"
            ) from error
