"""False-promotion rate: markets with no directional edge must (almost) never be promoted.

Trains the demo profile's recipe (walk-forward folds included) on N synthetic markets with
`signal: 0.0` and volatility clustering on (the case that fooled the five form gates: three-class
fit without direction), and prints each market's skill statistic and whether it would be
promoted (every gate passed). At the default skill_alpha of 0.01, at most 1 of 20 may pass.

Usage: python bench/false_promotion.py [--markets 20] [--days 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from crpbot_assets.profiles import get_profile
from v8_model.defaults import SYMBOLS
from v8_model.features import build_features_dataset
from v8_model.pipeline import train_and_evaluate
from v8_model.synthetic import MINUTES_PER_DAY, generate_candles

FIRST_SEED = 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)
    base = get_profile("demo").train
    print(
        f"{args.markets} null markets x {args.days} days; demo recipe: epochs={base.epochs}, "
        f"folds={base.folds}, skill_alpha={base.skill_alpha}"
    )
    print(
        f"{'#':>3} {'symbol':>6} {'seed':>5} {'rank_ic':>8} {'ci_low':>8} {'ci_high':>8} "
        f"{'p':>6} {'calls':>6} {'acc':>6} {'base':>6} {'form':>5} {'skill':>5} {'promoted':>8} "
        f"{'s':>5}",
        flush=True,
    )
    promoted = 0
    for index in range(args.markets):
        symbol, seed = SYMBOLS[index % len(SYMBOLS)], FIRST_SEED + index
        started = time.perf_counter()
        candles = generate_candles(
            symbol, minutes=args.days * MINUTES_PER_DAY, seed=seed, signal=0.0
        )
        config = dataclasses.replace(base, seed=seed)
        evaluation = train_and_evaluate(
            build_features_dataset(candles), symbol=symbol, config=config
        ).evaluation
        skill = evaluation.worth.skill
        form = all(g.passed for n, g in evaluation.gates.items() if n != "directional_skill")
        promoted += evaluation.all_gates_passed
        print(
            f"{index + 1:>3} {symbol:>6} {seed:>5} {skill.rank_ic:>+8.4f} {skill.ci_low:>+8.4f} "
            f"{skill.ci_high:>+8.4f} {skill.p_value:>6.3f} {skill.calls:>6} "
            f"{evaluation.test_accuracy:>6.3f} {evaluation.baseline_accuracy:>6.3f} "
            f"{'pass' if form else 'FAIL':>5} {'pass' if skill.passed else 'FAIL':>5} "
            f"{'YES' if evaluation.all_gates_passed else 'no':>8} "
            f"{time.perf_counter() - started:>5.1f}",
            flush=True,
        )
    allowed = max(1, round(base.skill_alpha * args.markets))
    verdict = "met" if promoted <= allowed else "NOT met"
    print(
        f"promoted {promoted} of {args.markets} null markets at skill_alpha={base.skill_alpha} "
        f"(target <= {allowed}): {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
