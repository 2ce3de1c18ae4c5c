"""False-promotion rate: markets with no directional edge must (almost) never be promoted.

Trains the demo profile's recipe (walk-forward folds included) on N synthetic markets with
`signal: 0.0` and volatility clustering on (the case that fooled the five form gates: three-class
fit without direction), and prints each market's skill statistic and whether it would be
promoted (every gate passed). At the default skill_alpha of 0.01, at most 1 of 20 may pass.
`bench/power.py` measures the same rate beside the promotion rate of markets with an edge.

Usage: python bench/false_promotion.py [--markets 20] [--days 30] [--jobs 1]
"""

from __future__ import annotations

import argparse
import sys

from market_trials import TRIAL_HEADER, markets, run_trials, trial_row

from crpbot_assets.profiles import get_profile

FIRST_SEED = 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1, help="markets trained at once")
    args = parser.parse_args(argv)
    base = get_profile("demo").train
    print(
        f"{args.markets} null markets x {args.days} days; demo recipe: epochs={base.epochs}, "
        f"folds={base.folds}, skill_alpha={base.skill_alpha}"
    )
    print(TRIAL_HEADER, flush=True)
    plan = markets(args.markets, FIRST_SEED, days=args.days, signal=0.0)
    promoted = 0
    for number, trial in enumerate(run_trials(plan, base, args.jobs), start=1):
        promoted += trial.promoted
        print(trial_row(number, trial), flush=True)
    allowed = max(1, round(base.skill_alpha * args.markets))
    verdict = "met" if promoted <= allowed else "NOT met"
    print(
        f"promoted {promoted} of {args.markets} null markets at skill_alpha={base.skill_alpha} "
        f"(target <= {allowed}): {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
