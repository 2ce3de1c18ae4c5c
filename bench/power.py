"""Power of the full gate set: the smallest planted edge the demo recipe promotes, per data span.

For each span (default 60 days, the demo's, and 365) and each planted strength from 0 to the
demo's (`crpbot_assets.profiles.SYNTHETIC_SIGNAL`), trains the demo profile's recipe on N
synthetic markets (volatility clustering on; the same seeds at every strength, so a row of the
table differs from the next only in the strength) and counts the markets that pass every gate,
the five form gates and directional skill, i.e. would be promoted. Prints each market as it
finishes, then per span a table: strength, promoted, the promotion rate with its 95%
Clopper-Pearson interval, the median rank IC on the walk-forward test rows, the medians of the
net return and break-even cost per side at the thresholds chosen on validation, and of the same
trading every BUY/SELL call of the main split's test rows (the calls' own edge). Under each
table:

- the smallest rank IC found 9 times in 10: the lowest median rank IC among the strengths
  promoted in at least 90% of their markets (the grid's resolution, not an interpolation);
- the false-promotion rate: the promotion rate at strength 0;
- for the demo's own span and strength: the chance that all three demo symbols are promoted,
  the per-market rate cubed (the symbols' markets are independent draws), with the cube of the
  low end of the rate's 95% interval.

Usage: python bench/power.py [--quick] [--markets 20] [--spans 60,365] [--strengths 0,0.05,...]
                             [--jobs 1]
`--quick` trains 3 markets per cell instead of 20; `--jobs N` trains N markets at once. Each
market's row ends with the seconds it took.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

import numpy as np
from market_trials import TRIAL_HEADER, Trial, markets, run_trials, trial_row
from scipy.stats import binomtest

from crpbot_assets.profiles import SYNTHETIC_SIGNAL, get_profile

FIRST_SEED = 2000
MARKETS = 20
QUICK_MARKETS = 3
DEMO_SYMBOLS = 3
# "Found 9 times in 10": the promotion rate a strength needs to count as found.
FOUND_RATE = 0.9


def default_strengths() -> list[float]:
    """Five strengths evenly spaced from 0 to the demo's."""
    return [round(float(s), 4) for s in np.linspace(0.0, SYNTHETIC_SIGNAL, 5)]


def _numbers(text: str, kind: type) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        message = f"expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def rate_interval(promoted: int, total: int) -> tuple[float, float]:
    """The 95% Clopper-Pearson interval of a promotion rate."""
    interval = binomtest(promoted, total).proportion_ci(confidence_level=0.95, method="exact")
    return interval.low, interval.high


def span_table(days: int, cells: dict[float, list[Trial]]) -> list[str]:
    """The table of one span and the figures under it."""
    lines = [
        f"== {days} days",
        f"{'strength':>8} {'promoted':>9} {'rate':>5} {'95% interval':>13} {'median IC':>9} "
        f"{'IC range':>17} {'median net':>10} {'b-even':>6} {'all net':>8} {'all b-e':>7}",
    ]
    found = []
    for strength, trials in sorted(cells.items()):
        promoted = sum(t.promoted for t in trials)
        low, high = rate_interval(promoted, len(trials))
        ics = [t.rank_ic for t in trials]
        median_ic = statistics.median(ics)
        if promoted >= FOUND_RATE * len(trials):
            found.append(median_ic)
        lines.append(
            f"{strength:>8.4f} {promoted:>4}/{len(trials):<4} {promoted / len(trials):>5.2f} "
            f"{f'[{low:.2f}, {high:.2f}]':>13} {median_ic:>+9.4f} "
            f"{f'[{min(ics):+.4f}, {max(ics):+.4f}]':>17} "
            f"{statistics.median(t.net_return for t in trials):>+10.2%} "
            f"{statistics.median(t.break_even_fee_bps for t in trials):>6.1f} "
            f"{statistics.median(t.every_call_net_return for t in trials):>+8.2%} "
            f"{statistics.median(t.every_call_break_even_bps for t in trials):>7.1f}"
        )
    lines.append(
        f"smallest rank IC found 9 times in 10 over {days} days: "
        + (f"{min(found):+.4f}" if found else "none of the strengths tried")
    )
    if 0.0 in cells:
        null = cells[0.0]
        promoted = sum(t.promoted for t in null)
        low, high = rate_interval(promoted, len(null))
        lines.append(
            f"false promotion at strength 0 over {days} days: {promoted} of {len(null)} "
            f"({promoted / len(null):.2f}, 95% interval [{low:.2f}, {high:.2f}])"
        )
    return lines


def demo_chance(days: int, cells: dict[float, list[Trial]]) -> str | None:
    """P(all three demo symbols promoted) at the demo's span and strength, if that cell ran."""
    trials = cells.get(SYNTHETIC_SIGNAL)
    if days != get_profile("demo").days or not trials:
        return None
    promoted = sum(t.promoted for t in trials)
    rate, (low, _) = promoted / len(trials), rate_interval(promoted, len(trials))
    return (
        f"demo ({days} days, strength {SYNTHETIC_SIGNAL}): {promoted} of {len(trials)} markets "
        f"promoted; all {DEMO_SYMBOLS} symbols promoted with probability "
        f"{rate**DEMO_SYMBOLS:.2f} (cube of the rate's 95% interval's low end: "
        f"{low**DEMO_SYMBOLS:.2f})"
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=None, help=f"per cell (default {MARKETS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MARKETS} markets per cell")
    parser.add_argument("--spans", type=lambda text: _numbers(text, int), default=[60, 365])
    parser.add_argument(
        "--strengths", type=lambda text: _numbers(text, float), default=default_strengths()
    )
    parser.add_argument("--jobs", type=int, default=1, help="markets trained at once")
    args = parser.parse_args(argv)
    count = args.markets or (QUICK_MARKETS if args.quick else MARKETS)
    if count < 1 or any(days < 1 for days in args.spans):
        parser.error("--markets and every span must be positive")
    if any(not 0.0 <= s < 1.0 for s in args.strengths):
        parser.error("every strength must be in [0, 1)")
    base = get_profile("demo").train
    print(
        f"{count} markets per cell; spans {args.spans} days; strengths {args.strengths}; demo "
        f"recipe: epochs={base.epochs}, folds={base.folds}, skill_alpha={base.skill_alpha}, "
        f"fee_bps={base.fee_bps:g}, slippage_bps={base.slippage_bps:g}"
    )
    summary = []
    for days in args.spans:
        plan = [
            market
            for strength in sorted(args.strengths)
            for market in markets(count, FIRST_SEED, days=days, signal=strength)
        ]
        print(TRIAL_HEADER, flush=True)
        cells: dict[float, list[Trial]] = {}
        for number, trial in enumerate(run_trials(plan, base, args.jobs), start=1):
            cells.setdefault(trial.market.signal, []).append(trial)
            print(trial_row(number, trial), flush=True)
        table = span_table(days, cells)
        chance = demo_chance(days, cells)
        summary += [*table, *([chance] if chance else []), ""]
        print("\n".join(table + ([chance] if chance else [])), flush=True)
    if len(args.spans) > 1:  # every span's table together, after the markets' rows
        print("\n" + "\n".join(summary).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
