"""Directional skill: do the model's BUY/SELL calls predict the sign of the move that follows?

The statistic is the rank information coefficient (Spearman correlation) between the model's
direction score P(BUY) - P(SELL) and the realised forward log return over the label horizon,
on out-of-sample rows only. It measures direction, not three-class fit: a model that only knows
*when* the market will move (HOLD vs a move) scores BUY and SELL alike and has no rank IC.

Neighbouring rows share most of their horizon (and volatility clusters), so they are far from
independent. Significance therefore comes from `arch`'s stationary bootstrap (a maintained,
tested implementation of Politis-Romano resampling) with a mean block length of at least the
horizon, lengthened to `arch`'s optimal block length when the data's dependence is longer.
The test is one-sided (H0: rank IC <= 0): p is the share of bootstrap statistics, centred on the
observed one, at least as large as it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from v8_model.defaults import CLASS_NAMES
from v8_model.evaluation.gates import DIRECTIONAL_SKILL
from v8_model.evaluation.metrics import DirectionalSkill, GateResult

BOOTSTRAP_REPS = 999
BOOTSTRAP_SEED = 20240101  # fixed: the same predictions always get the same p-value
SELL, BUY = CLASS_NAMES.index("SELL"), CLASS_NAMES.index("BUY")


def direction_scores(probabilities: np.ndarray) -> np.ndarray:
    """P(BUY) - P(SELL) per row: how strongly the model leans long (+) or short (-)."""
    return probabilities[:, BUY] - probabilities[:, SELL]


def direction_calls(probabilities: np.ndarray) -> int:
    """How many rows have BUY or SELL as their most probable class."""
    top = probabilities.argmax(axis=1)
    return int(np.count_nonzero((top == BUY) | (top == SELL)))


def standardised_ranks(values: np.ndarray) -> np.ndarray:
    ranks = rankdata(values)
    ranks -= ranks.mean()
    spread = ranks.std()
    return ranks / spread if spread > 0 else np.zeros_like(ranks)


def correlation(u: np.ndarray, v: np.ndarray) -> float:
    su, sv = u.std(), v.std()
    if su == 0 or sv == 0:
        return 0.0
    return float(np.mean((u - u.mean()) * (v - v.mean())) / (su * sv))


def block_size(products: np.ndarray, horizon: int) -> int:
    """At least the horizon; longer when the dependence of the IC's summands is longer."""
    # arch is imported where it is used: it brings statsmodels and matplotlib (~50 MiB), which
    # the trainer would otherwise hold while its feature matrices are largest (bench/memory.py).
    from arch.bootstrap import optimal_block_length

    optimal = float(optimal_block_length(products)["stationary"].iloc[0])
    size = max(horizon, math.ceil(optimal) if math.isfinite(optimal) else horizon)
    return int(min(size, max(horizon, len(products) // 4)))


def bootstrap_replicates(
    statistic: Callable[..., float],
    arrays: Sequence[np.ndarray],
    *,
    block: int,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray:
    """`statistic(*arrays)` on `reps` stationary-bootstrap resamples that keep rows together.

    Rows of every array are drawn jointly, so a paired statistic (two models' skill on the same
    minutes) keeps its pairing.
    """
    from arch.bootstrap import StationaryBootstrap  # see block_size

    bootstrap = StationaryBootstrap(block, *arrays, seed=seed)
    return bootstrap.apply(lambda *resampled: np.array([statistic(*resampled)]), reps)[:, 0]


def rank_ic(scores: np.ndarray, forward_returns: np.ndarray) -> float:
    """Spearman correlation of direction scores with forward returns (0 when either is flat)."""
    return correlation(standardised_ranks(scores), standardised_ranks(forward_returns))


def directional_skill(
    probabilities: np.ndarray,
    forward_returns: np.ndarray,
    *,
    horizon: int,
    alpha: float,
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> DirectionalSkill:
    """The rank IC with its one-sided bootstrap p-value and 95% interval."""
    if probabilities.ndim != 2 or len(probabilities) != len(forward_returns):
        raise ValueError(
            f"probabilities {probabilities.shape} and forward_returns {forward_returns.shape} "
            "must have one row per out-of-sample minute"
        )
    if not np.all(np.isfinite(forward_returns)):
        raise ValueError("forward_returns contain NaN/Inf: drop rows without a forward return")
    rows = len(forward_returns)
    calls = direction_calls(probabilities) if rows else 0
    u = standardised_ranks(direction_scores(probabilities)) if rows else np.zeros(0)
    v = standardised_ranks(forward_returns) if rows else np.zeros(0)
    if rows < 2 * horizon or not u.any() or not v.any():
        # Too few rows, or a constant score (a model that never leans): no evidence of skill.
        return DirectionalSkill(0.0, 0.0, 0.0, 1.0, alpha, False, rows, calls, horizon, 0)
    statistic = correlation(u, v)
    block = block_size(u * v, horizon)
    replicates = bootstrap_replicates(correlation, (u, v), block=block, reps=reps, seed=seed)
    # Centred on the observed statistic, the replicates stand for the statistic under H0.
    p_value = float((1 + np.count_nonzero(replicates - statistic >= statistic)) / (reps + 1))
    low, high = np.quantile(replicates, [0.025, 0.975])
    return DirectionalSkill(
        rank_ic=statistic,
        ci_low=float(low),
        ci_high=float(high),
        p_value=p_value,
        alpha=alpha,
        passed=bool(statistic > 0 and p_value < alpha),
        rows=rows,
        calls=calls,
        block_size=block,
        bootstrap_reps=reps,
    )


def skill_gate(skill: DirectionalSkill) -> GateResult:
    """The sixth gate: out-of-sample directional skill, significant at the set level."""
    return DIRECTIONAL_SKILL.result(
        passed=skill.passed,
        value=skill.p_value,
        alpha=skill.alpha,
        details={
            "rank_ic": skill.rank_ic,
            "ci_low": skill.ci_low,
            "ci_high": skill.ci_high,
            "p_value": skill.p_value,
            "alpha": skill.alpha,
            "calls": skill.calls,
            "rows": skill.rows,
            "block_size": skill.block_size,
        },
    )
