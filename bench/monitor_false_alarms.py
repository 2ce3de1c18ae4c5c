"""False alarms of the monitor: on markets that did not change, how often does a check fail?

For each of N synthetic markets (one continuous market, nothing changed at any row), trains the
recipe on the first `--days` days, then checks the model on the `--fresh-days` that follow with
the very code `model_monitor` runs (`v8_model.evaluation.monitor.evaluate_fresh`, default
MonitorSettings), and prints each market's promise, realized skill and drift.

The realized_skill rule promises a false-alarm rate of at most skill_alpha (two one-sided tests
at skill_alpha / 2 each); the feature_drift rule has no analytic rate, so this measures it. The
summary gives each check's alarms with a 95% Clopper-Pearson interval for the rate, over all
markets and over those whose model passed every gate (only those are promoted and monitored).

Usage: nice python bench/monitor_false_alarms.py [--markets 20] [--days 14] [--fresh-days 4]
       [--signal 0.1] [--epochs 1] [--folds 1] [--no-clustering]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from scipy.stats import binomtest

from crpbot_assets.profiles import get_profile
from v8_model.config import TrainConfig
from v8_model.data.features import build_features_dataset
from v8_model.data.synthetic import generate_candles
from v8_model.defaults import MINUTES_PER_DAY, SYMBOLS
from v8_model.evaluation.monitor import MonitorSettings, evaluate_fresh
from v8_model.model.pipeline import train_and_evaluate
from v8_model.registry.predict import predict_rows

FIRST_SEED = 3000


def _rate(alarms: int, markets: int) -> str:
    if not markets:
        return "no markets"
    interval = binomtest(alarms, markets).proportion_ci(confidence_level=0.95)
    return (
        f"{alarms} of {markets} = {alarms / markets:.1%} "
        f"(95% interval {interval.low:.1%} to {interval.high:.1%})"
    )


def check_market(
    index: int, args: argparse.Namespace, config: TrainConfig, settings: MonitorSettings
) -> tuple[bool, bool, bool]:
    """Train on one unchanged market, monitor its fresh days; print and return the verdicts."""
    symbol, seed = SYMBOLS[index % len(SYMBOLS)], FIRST_SEED + index
    started = time.perf_counter()
    candles = generate_candles(
        symbol,
        minutes=(args.days + args.fresh_days) * MINUTES_PER_DAY,
        seed=seed,
        signal=args.signal,
        volatility_clustering=not args.no_clustering,
    )
    dataset = build_features_dataset(candles)
    cutoff = candles["timestamp"].iloc[args.days * MINUTES_PER_DAY]
    training = dataset[dataset["timestamp"] < cutoff].reset_index(drop=True)
    outcome = train_and_evaluate(
        training, symbol=symbol, config=dataclasses.replace(config, seed=seed)
    )
    model, processor = outcome.training.model, outcome.processor
    checked = evaluate_fresh(
        dataset,
        outcome.evaluation,
        probabilities_at=lambda positions: predict_rows(dataset, positions, model, processor),
        scaled_at=lambda positions: processor.transform(dataset, positions),
        settings=settings,
        source=f"market {index + 1}",
        version=f"seed {seed}",
    )
    skill, drift = checked.skill, checked.drift
    gates = outcome.evaluation.all_gates_passed
    print(
        f"{index + 1:>3} {symbol:>4} {seed:>5} {'pass' if gates else 'fail':>5} "
        f"{skill.promised_rank_ic:>+9.4f} {skill.rank_ic:>+9.4f} {skill.rank_ic_low:>+8.4f} "
        f"{skill.rank_ic_high:>+8.4f} {skill.p_below_promised:>8.3f} {skill.p_negative:>7.3f} "
        f"{'ok' if skill.passed else 'ALARM':>5} {drift.drifted_share:>7.1%} "
        f"{drift.ood_share:>6.2%} {'ok' if drift.passed else 'ALARM':>5} "
        f"{time.perf_counter() - started:>5.0f}",
        flush=True,
    )
    return gates, skill.passed, drift.passed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--fresh-days", type=int, default=4)
    parser.add_argument("--signal", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--no-clustering", action="store_true")
    args = parser.parse_args(argv)
    settings = MonitorSettings()
    config = dataclasses.replace(
        get_profile("demo").train, epochs=args.epochs, folds=args.folds, batch_size=1024
    )
    print(
        f"{args.markets} unchanged markets: {args.days} days to train, {args.fresh_days} fresh "
        f"days; signal {args.signal}, volatility clustering "
        f"{'off' if args.no_clustering else 'on'}; epochs={config.epochs}, folds={config.folds}; "
        f"skill_alpha={settings.skill_alpha}, psi_threshold={settings.psi_threshold}, "
        f"max_drifted_share={settings.max_drifted_share}, min_drift_rows={settings.min_drift_rows}"
    )
    print(
        f"{'#':>3} {'sym':>4} {'seed':>5} {'gates':>5} {'promised':>9} {'realized':>9} "
        f"{'low':>8} {'high':>8} {'p_below':>8} {'p_neg':>7} {'skill':>5} {'drifted':>7} "
        f"{'ood':>6} {'drift':>5} {'s':>5}",
        flush=True,
    )
    rows = [check_market(index, args, config, settings) for index in range(args.markets)]
    promoted = [row for row in rows if row[0]]
    print()
    print(f"promised realized_skill false-alarm rate: at most {settings.skill_alpha:.1%}")
    for label, subset in (("all markets", rows), ("promoted (every gate passed)", promoted)):
        print(f"{label}:")
        print(f"  realized_skill alarms: {_rate(sum(not r[1] for r in subset), len(subset))}")
        print(f"  feature_drift alarms:  {_rate(sum(not r[2] for r in subset), len(subset))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
