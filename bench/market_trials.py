"""Trials of the demo recipe on synthetic markets of known planted strength.

The machinery `bench/false_promotion.py` and `bench/power.py` share: one trial generates a
market (`v8_model.data.synthetic`, volatility clustering on), builds its features, trains the demo
profile's recipe on it (walk-forward folds included) and keeps what decides promotion. Markets
are named by (symbol, seed): the symbols take turns and the seeds count up from a first seed, so
the same index always gives the same market. A market's random draws (volatility path, shocks,
hidden trend) depend on its seed and symbol only, so one seed at two strengths is the same market
with more or less of its trend in the returns: comparisons across strengths are paired.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from v8_model.config import TrainConfig
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY, SYMBOLS
from v8_model.evaluation.backtest import run_backtest
from v8_model.evaluation.gates import DIRECTIONAL_SKILL
from v8_model.model.pipeline import train_and_evaluate


@dataclass(frozen=True)
class Market:
    """One synthetic market: which symbol's profile, which seed, how long, how strong."""

    symbol: str
    seed: int
    days: int
    signal: float


@dataclass(frozen=True)
class Trial:
    """What the demo recipe made of one market: the figures that decide promotion."""

    market: Market
    rank_ic: float
    ci_low: float
    ci_high: float
    p_value: float
    calls: int
    test_accuracy: float
    baseline_accuracy: float
    form_passed: bool  # the five gates of the seed
    skill_passed: bool  # the sixth, directional skill
    promoted: bool  # every gate passed
    # The backtest at the confidence threshold each fold chose on validation (no trades when no
    # threshold covered the costs there) ...
    net_return: float
    break_even_fee_bps: float
    # ... and trading every BUY/SELL call of the main split's test rows: the edge of the calls
    # themselves, whatever the costs.
    every_call_net_return: float
    every_call_break_even_bps: float
    seconds: float


def markets(count: int, first_seed: int, *, days: int, signal: float) -> list[Market]:
    """`count` markets: symbols in turn, seeds first_seed, first_seed + 1, ..."""
    return [
        Market(SYMBOLS[index % len(SYMBOLS)], first_seed + index, days, signal)
        for index in range(count)
    ]


def run_trial(market: Market, config: TrainConfig) -> Trial:
    """Generate the market, train `config` on it (seeded by the market's seed), measure it."""
    started = time.perf_counter()
    candles = generate_candles(
        market.symbol,
        minutes=market.days * MINUTES_PER_DAY,
        seed=market.seed,
        signal=market.signal,
    )
    outcome = train_and_evaluate(
        build_features_dataset(candles),
        symbol=market.symbol,
        config=dataclasses.replace(config, seed=market.seed),
    )
    evaluation = outcome.evaluation
    worth = evaluation.worth
    skill = worth.skill
    every_call, _ = run_backtest(
        outcome.predictions.test_probabilities,
        outcome.predictions.test_returns,
        horizon=worth.horizon,
        threshold=config.min_confidence,
        fee_bps=config.fee_bps,
        slippage_bps=config.slippage_bps,
        long_only=config.long_only,
    )
    return Trial(
        market=market,
        rank_ic=skill.rank_ic,
        ci_low=skill.ci_low,
        ci_high=skill.ci_high,
        p_value=skill.p_value,
        calls=skill.calls,
        test_accuracy=evaluation.test_accuracy,
        baseline_accuracy=evaluation.baseline_accuracy,
        form_passed=all(
            g.passed for n, g in evaluation.gates.items() if n != DIRECTIONAL_SKILL.name
        ),
        skill_passed=skill.passed,
        promoted=evaluation.all_gates_passed,
        net_return=worth.backtest.net_return,
        break_even_fee_bps=worth.backtest.break_even_fee_bps,
        every_call_net_return=every_call.net_return,
        every_call_break_even_bps=every_call.break_even_fee_bps,
        seconds=time.perf_counter() - started,
    )


def run_trials(plan: Iterable[Market], config: TrainConfig, jobs: int = 1) -> Iterator[Trial]:
    """Each market's trial, in the plan's order; `jobs` > 1 trains that many at once."""
    if jobs <= 1:
        for market in plan:
            yield run_trial(market, config)
        return
    plan = list(plan)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(run_trial, plan, [config] * len(plan))


TRIAL_HEADER = (
    f"{'#':>3} {'days':>4} {'signal':>6} {'symbol':>6} {'seed':>5} {'rank_ic':>8} {'ci_low':>8} "
    f"{'ci_high':>8} {'p':>6} {'calls':>6} {'acc':>6} {'base':>6} {'form':>5} {'skill':>5} "
    f"{'promoted':>8} {'net':>8} {'b-even':>6} {'all net':>8} {'all b-e':>7} {'s':>5}"
)


def trial_row(number: int, trial: Trial) -> str:
    """One line per trial under TRIAL_HEADER. b-even: break-even cost per side in bps; all net,
    all b-e: the same trading every call."""
    market = trial.market
    return (
        f"{number:>3} {market.days:>4} {market.signal:>6.3f} {market.symbol:>6} {market.seed:>5} "
        f"{trial.rank_ic:>+8.4f} {trial.ci_low:>+8.4f} {trial.ci_high:>+8.4f} "
        f"{trial.p_value:>6.3f} {trial.calls:>6} {trial.test_accuracy:>6.3f} "
        f"{trial.baseline_accuracy:>6.3f} {'pass' if trial.form_passed else 'FAIL':>5} "
        f"{'pass' if trial.skill_passed else 'FAIL':>5} {'YES' if trial.promoted else 'no':>8} "
        f"{trial.net_return:>+8.2%} {trial.break_even_fee_bps:>6.1f} "
        f"{trial.every_call_net_return:>+8.2%} {trial.every_call_break_even_bps:>7.1f} "
        f"{trial.seconds:>5.0f}"
    )
