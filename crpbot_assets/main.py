"""The main command: every asset, every symbol, on the embedded default; prints the gate report.

    python -m crpbot_assets.main [--profile demo|full] [--symbols BTC,ETH]

One `symbol_pipeline` run per symbol (candles → features → processor → model → production_model,
with every check), then one `gate_report_job` run. The runs are recorded in a persistent
DAGSTER_HOME (default `<repo>/.dagster_home`, git-ignored), so `dagster dev` with the same
DAGSTER_HOME shows them. Exits 1 when any run failed, naming the symbol and why.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import dagster as dg

from crpbot_assets.alerts import DEFAULT_UI_URL, UI_URL_ENV_VAR
from crpbot_assets.definitions import defs
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import PROFILES, default_profile_name
from crpbot_assets.storage import REPO_ROOT, REPORT_JSON_KEY, REPORT_MARKDOWN_KEY

DAGSTER_HOME_DEFAULT = REPO_ROOT / ".dagster_home"


def failure_summary(result: dg.ExecuteInProcessResult) -> str:
    """Why a run failed: the failed gate checks with their values, else the failed steps."""
    failed_checks = [
        evaluation for evaluation in result.get_asset_check_evaluations() if not evaluation.passed
    ]
    if failed_checks:
        parts = []
        for evaluation in failed_checks:
            value = evaluation.metadata.get("value")
            shown = f" = {value.value:.6g}" if value is not None else ""
            parts.append(f"check {evaluation.check_name}{shown}: {evaluation.description or ''}")
        return "; ".join(part.rstrip(": ") for part in parts)
    failures = [
        f"step {event.step_key}: {event.step_failure_data.error.message.strip()}"
        for event in result.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    return "; ".join(failures) or "failed (see the run's logs)"


def run_all(
    symbols: Sequence[str], profile: str, instance: dg.DagsterInstance
) -> dict[str, str | None]:
    """Materialize every asset for `symbols`; returns run name → failure reason (None: ok)."""
    run_config = {"resources": {"profile": {"config": {"name": profile}}}}
    ui_url = os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL).rstrip("/")
    outcomes: dict[str, str | None] = {}
    pipeline = defs.resolve_job_def("symbol_pipeline")
    for symbol in symbols:
        print(f"\n=== {symbol}: symbol_pipeline ({profile} profile) ===", flush=True)
        result = pipeline.execute_in_process(
            partition_key=symbol, instance=instance, run_config=run_config, raise_on_error=False
        )
        outcomes[symbol] = None if result.success else failure_summary(result)
        print(
            f"=== {symbol}: {'ok' if result.success else 'FAILED'}: {ui_url}/runs/{result.run_id}"
        )
    print("\n=== gate_report_job ===", flush=True)
    report = defs.resolve_job_def("gate_report_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    outcomes["gate_report"] = None if report.success else failure_summary(report)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crpbot_assets.main", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=default_profile_name())
    parser.add_argument("--symbols", help="comma-separated subset, default: every symbol")
    args = parser.parse_args(argv)

    os.environ.setdefault("DAGSTER_HOME", str(DAGSTER_HOME_DEFAULT))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    known = symbol_partitions.get_partition_keys()
    symbols = [s.strip().upper() for s in args.symbols.split(",")] if args.symbols else known
    unknown = sorted(set(symbols) - set(known))
    if unknown:
        parser.error(f"unknown symbol(s) {unknown}; known: {known}")

    with dg.DagsterInstance.get() as instance:
        outcomes = run_all(symbols, args.profile, instance)

    storage = defs.resources["storage"]
    print(f"\nDAGSTER_HOME: {os.environ['DAGSTER_HOME']}")
    print(f"gate report: {storage.store.uri(REPORT_MARKDOWN_KEY)}")
    print(f"             {storage.store.uri(REPORT_JSON_KEY)}")
    failed = {name: why for name, why in outcomes.items() if why}
    for name, why in failed.items():
        print(f"FAILED {name}: {why}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(outcomes)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(outcomes)} runs succeeded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
