"""Champion / challenger: is a retrained model (that passed every gate) worse than the serving one?

The two are compared on the same rows, unseen by both (the shared unseen window): the
challenger's test segment (no training, early stopping or threshold choice of the challenger saw
it) after the last row of the champion's dataset (nothing of the champion saw it). Each model's
own test figures would compare two different markets.

The statistic is paired: the difference of the two rank ICs on the same minutes,
challenger − champion, with the skill gate's stationary bootstrap (`v8_model.evaluation.worth`)
drawing rows jointly, so the minutes where both models win or lose together cancel. H0: the
challenger
is not worse (difference >= 0); the one-sided p is the share of bootstrap differences, centred on
the observed one, at or below it. A challenger with p < alpha is significantly worse and is not
promoted.

When the shared window holds fewer than `min_shared_rows` rows (a daily retrain shares one day
at most), the comparison cannot tell a worse model from noise: the rule is then to promote on the
gates alone, and the decision says so. The same rule applies when there is no champion yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from v8_model.evaluation.worth import (
    block_size,
    bootstrap_replicates,
    correlation,
    direction_scores,
    standardised_ranks,
)

PROMOTE = "promote"
KEEP_CHAMPION = "keep champion"


@dataclass(frozen=True)
class Comparison:
    """The champion/challenger figures recorded in promotion.json and the asset's metadata.

    The figures are None, and `reason` says why, when there is no champion or the shared window
    is too short to compare on.
    """

    champion_version: str | None
    champion_rank_ic: float | None
    challenger_rank_ic: float | None
    shared_rows: int
    shared_start: str | None
    shared_end: str | None
    p_value: float | None
    alpha: float
    min_shared_rows: int
    decision: str
    reason: str

    @property
    def worse(self) -> bool:
        return self.decision == KEEP_CHAMPION

    def to_dict(self) -> dict:
        return asdict(self)


def no_champion(alpha: float, min_shared_rows: int) -> Comparison:
    return Comparison(
        champion_version=None,
        champion_rank_ic=None,
        challenger_rank_ic=None,
        shared_rows=0,
        shared_start=None,
        shared_end=None,
        p_value=None,
        alpha=alpha,
        min_shared_rows=min_shared_rows,
        decision=PROMOTE,
        reason="no champion: nothing serves yet, so the challenger is promoted on its gates",
    )


def compare_on_shared_rows(
    champion_probabilities: np.ndarray,
    challenger_probabilities: np.ndarray,
    forward_returns: np.ndarray,
    *,
    champion_version: str,
    window: tuple[str | None, str | None],
    horizon: int,
    alpha: float,
    min_shared_rows: int,
) -> Comparison:
    """Both models' rank IC on the same unseen rows, and whether the challenger is worse."""
    rows = len(forward_returns)
    if len(champion_probabilities) != rows or len(challenger_probabilities) != rows:
        raise ValueError("champion, challenger and forward returns need one row per shared minute")
    base = {
        "champion_version": champion_version,
        "shared_rows": rows,
        "shared_start": window[0],
        "shared_end": window[1],
        "alpha": alpha,
        "min_shared_rows": min_shared_rows,
    }
    if rows < max(min_shared_rows, 2 * horizon):
        return Comparison(
            **base,
            champion_rank_ic=None,
            challenger_rank_ic=None,
            p_value=None,
            decision=PROMOTE,
            reason=f"shared unseen window too short to compare ({rows} < "
            f"{max(min_shared_rows, 2 * horizon)} rows): promoted on its gates alone",
        )
    returns = standardised_ranks(forward_returns)
    champion = standardised_ranks(direction_scores(champion_probabilities))
    challenger = standardised_ranks(direction_scores(challenger_probabilities))

    def difference(a: np.ndarray, b: np.ndarray, v: np.ndarray) -> float:
        return correlation(b, v) - correlation(a, v)

    champion_ic, challenger_ic = correlation(champion, returns), correlation(challenger, returns)
    observed = challenger_ic - champion_ic
    block = block_size((challenger - champion) * returns, horizon)
    replicates = bootstrap_replicates(difference, (champion, challenger, returns), block=block)
    p_value = float(
        (1 + np.count_nonzero(replicates - observed <= observed)) / (len(replicates) + 1)
    )
    worse = p_value < alpha
    figures = (
        f"challenger rank IC {challenger_ic:+.4f} vs champion {champion_version} "
        f"{champion_ic:+.4f} on {rows} shared unseen rows ({window[0]} to {window[1]}), "
        f"one-sided p = {p_value:.3g}"
    )
    return Comparison(
        **base,
        champion_rank_ic=champion_ic,
        challenger_rank_ic=challenger_ic,
        p_value=p_value,
        decision=KEEP_CHAMPION if worse else PROMOTE,
        reason=f"{figures}: "
        + (
            f"significantly worse (p < {alpha:g}), champion kept"
            if worse
            else f"not significantly worse (alpha {alpha:g})"
        ),
    )
