"""The main command: every asset, every symbol, on the embedded default; prints the gate report.

    python -m crpbot_assets.main [--profile demo|full] [--symbols BTC,ETH]

One `symbol_pipeline` run per symbol (candles → features → processor → model → production_model,
with every check), then one `gate_report_job` run. The runs are recorded in a persistent
DAGSTER_HOME (default `<repo>/.dagster_home`, git-ignored), so `dagster dev` with the same
DAGSTER_HOME shows them. Exits 1 when any run failed, naming the symbol and why.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from crpbot_assets.alerts import DEFAULT_UI_URL, UI_URL_ENV_VAR
from crpbot_assets.definitions import defs
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import PROFILES, default_profile_name
from crpbot_assets.storage import REPO_ROOT, REPORT_JSON_KEY, REPORT_MARKDOWN_KEY
from crpbot_assets.writers import fail_orphaned_runs, process_tags
from v8_model.symbols import HOW_TO_ADD

DAGSTER_HOME_DEFAULT = REPO_ROOT / ".dagster_home"
# Dagster's wrappers around a step's own error; the failure line shows what they wrap.
DAGSTER_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


def _cause(error: SerializableErrorInfo) -> str:
    """The user's error inside Dagster's "Error occurred while executing op ..." wrappers."""
    while error.cause is not None and error.cls_name in DAGSTER_WRAPPERS:
        error = error.cause
    return error.message.strip()


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
        f"step {event.step_key}: {_cause(event.step_failure_data.error)}"
        for event in result.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    return "; ".join(failures) or "failed (see the run's logs)"


class SignalWatch:
    """Which of SIGINT/SIGTERM arrived, whoever handled them.

    Dagster turns both into an interrupt of the run in progress and returns a failed result, so
    without this the loop would go on to the next symbol. The wakeup fd sees every signal that has
    a Python handler, including Dagster's own.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> SignalWatch:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        self._write = write
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        # Outside a run, SIGTERM stops the command like Ctrl-C does.
        self._previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        return self

    def received(self) -> int | None:
        """The first watched signal received so far, or None."""
        try:
            numbers = os.read(self._read, 1024)
        except BlockingIOError:
            return None
        return next((number for number in numbers if number in self.SIGNALS), None)

    def __exit__(self, *exc_info: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous_term)
        os.close(self._read)
        os.close(self._write)


class Interrupted(Exception):
    def __init__(self, signal_number: int, outcomes: dict[str, str | None]) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
        self.outcomes = outcomes


def run_all(
    symbols: Sequence[str], profile: str, instance: dg.DagsterInstance, watch: SignalWatch
) -> dict[str, str | None]:
    """Materialize every asset for `symbols`; returns run name → failure reason (None: ok).

    Raises Interrupted (with the outcomes so far) when SIGINT or SIGTERM arrives: the run in
    progress is stopped by Dagster, and no further symbol starts.
    """
    run_config = {"resources": {"profile": {"config": {"name": profile}}}}
    ui_url = os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL).rstrip("/")
    outcomes: dict[str, str | None] = {}
    pipeline = defs.resolve_job_def("symbol_pipeline")
    for symbol in symbols:
        print(f"\n=== {symbol}: symbol_pipeline ({profile} profile) ===", flush=True)
        try:
            result = pipeline.execute_in_process(
                partition_key=symbol,
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
                tags=process_tags(),
            )
        except KeyboardInterrupt:  # a signal between Dagster's own handlers
            outcomes[symbol] = "interrupted"
            raise Interrupted(watch.received() or signal.SIGINT, outcomes) from None
        outcomes[symbol] = None if result.success else failure_summary(result)
        print(
            f"=== {symbol}: {'ok' if result.success else 'FAILED'}: {ui_url}/runs/{result.run_id}"
        )
        received = watch.received()
        if received is not None:
            outcomes[symbol] = outcomes[symbol] or "interrupted"
            raise Interrupted(received, outcomes)
    print("\n=== gate_report_job ===", flush=True)
    report = defs.resolve_job_def("gate_report_job").execute_in_process(
        instance=instance, raise_on_error=False, tags=process_tags()
    )
    outcomes["gate_report"] = None if report.success else failure_summary(report)
    return outcomes


def _symbols(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    known = symbol_partitions.get_partition_keys()
    if not text:
        return known
    symbols = [s.strip().upper() for s in text.split(",")]
    unknown = sorted(set(symbols) - set(known))
    if unknown:
        parser.error(f"unknown symbol(s) {unknown}; known: {known} ({HOW_TO_ADD})")
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        parser.error(f"--symbols lists {', '.join(repeated)} more than once; name each once")
    return symbols


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crpbot_assets.main", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--symbols", help="comma-separated subset, default: every symbol")
    args = parser.parse_args(argv)
    try:
        profile = args.profile or default_profile_name()
    except ValueError as error:
        parser.error(str(error))
    symbols = _symbols(parser, args.symbols)

    os.environ.setdefault("DAGSTER_HOME", str(DAGSTER_HOME_DEFAULT))
    os.makedirs(os.environ["DAGSTER_HOME"], exist_ok=True)
    with dg.DagsterInstance.get() as instance, SignalWatch() as watch:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id} was left in progress by a process that is gone: marked failed")
        try:
            outcomes = run_all(symbols, profile, instance, watch)
        except Interrupted as interrupted:
            not_run = [symbol for symbol in symbols if symbol not in interrupted.outcomes]
            print(
                f"stopped by {interrupted}: the run in progress was stopped"
                + (f"; not run: {', '.join(not_run)}" if not_run else ""),
                file=sys.stderr,
            )
            return 128 + interrupted.signal_number

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
