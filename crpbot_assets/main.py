"""The main command: every asset, every symbol, on the embedded default; prints the gate report.

    python -m crpbot_assets.main [--profile demo|full] [--symbols BTC,ETH] [--jobs N] [--verbose]

One `symbol_pipeline` run per symbol (candles → features → processor → model → production_model,
with every check), each in its own process (`crpbot_assets.symbol_run`, forked from a warm fork
server that imported the run's modules once: `crpbot_assets.symbol_processes`), up to `--jobs`
at a time; then one `gate_report_job` run. The runs are recorded in a persistent DAGSTER_HOME
(default `<repo>/.dagster_home`, git-ignored), so `dagster dev` with the same DAGSTER_HOME shows
them. The console shows each symbol's stage and epochs, then a summary table; Dagster's event
records stay in the run logs unless `--verbose`. Exits 1 when any run failed, naming the symbol
and why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path

from crpbot_assets import warm_trainer
from crpbot_assets.symbol_processes import (
    SYMBOL_RUN_MODULE,
    stop_fork_server,
    symbol_process_starter,
)
from v8_model import symbols as symbol_settings

if __name__ == "__main__":
    # The definitions imported below read the symbols setting as they load: a malformed one is
    # one line naming the setting (exit 2, as for every setting), not a traceback.
    try:
        symbol_settings.SYMBOLS  # noqa: B018 (read for its check)
    except symbol_settings.SymbolSettingsError as error:
        print(f"python -m crpbot_assets.main: {error}", file=sys.stderr)
        sys.exit(2)
    # The symbols' fork server imports what their runs need, and the warm trainer server what
    # their trainings need, while this process imports the rest.
    symbol_process_starter()
    warm_trainer.ensure_server()

import dagster as dg
from dagster._core.utils import make_new_run_id
from rich.console import Console

from crpbot_assets.alerts import DEFAULT_UI_URL, UI_URL_ENV_VAR
from crpbot_assets.console import (
    ProgressBoard,
    RunFollower,
    SymbolResult,
    promotion_line,
    summary_table,
)
from crpbot_assets.definitions import defs
from crpbot_assets.partitions import symbol_partitions
from crpbot_assets.profiles import PROFILES, default_profile_name, get_profile
from crpbot_assets.report import NOT_TRAINED, symbol_entry
from crpbot_assets.storage import REPO_ROOT, REPORT_JSON_KEY, REPORT_MARKDOWN_KEY
from crpbot_assets.symbol_run import (
    QUIET_LOGGERS,
    THREADS_ENV_VAR,
    failure_summary,
    run_in_forked_process,
)
from crpbot_assets.tracking import where_line
from crpbot_assets.trainers import utc_now
from crpbot_assets.writers import fail_orphaned_runs, process_tags
from v8_model.job.lifetime import PARENT_PID_ENV_VAR
from v8_model.symbols import HOW_TO_ADD

DAGSTER_HOME_DEFAULT = REPO_ROOT / ".dagster_home"
POLL_SECONDS = 0.5  # how often the console reads the runs' new events
# After a forwarded SIGINT/SIGTERM, how long a symbol's process may take to stop its run.
STOP_SECONDS = 60.0
EXIT_SETTING = 2  # a setting the user must fix, as argparse's usage errors


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


def available_cores() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


def default_jobs(symbols: int) -> int:
    """Symbols run at once by default: all of them when they fit in one wave of cores + 1, else
    one per core.

    Much of a symbol's run is single-threaded (imports, candles, features, figures), and a wave
    that leaves one symbol to run alone at the end idles a core: on 2 cores the demo's 3 symbols
    took 94-102 s one at a time, 66-84 s two at a time and 56-63 s all at once. With more
    symbols the waves overlap anyway and a third process only adds contention: 8 symbols took
    137-152 s two at a time, 140-169 s three at a time (bench/demo.sh, two rounds each).
    """
    cores = available_cores()
    return max(1, symbols if symbols <= cores + 1 else cores)


def symbol_run_env(jobs: int) -> dict[str, str]:
    """The environment of each symbol's process (and so of its trainer).

    Each trainer gets its share of the cores as torch/OpenMP threads: left at the default, every
    trainer starts one thread per core, and `jobs` trainers on the same cores then spin against
    each other (3 symbols on 2 cores took 5x longer in parallel than one after another). A user's
    own OMP_NUM_THREADS is kept.
    """
    env = {**os.environ, PARENT_PID_ENV_VAR: str(os.getpid())}  # see v8_model.job.lifetime
    env.setdefault(THREADS_ENV_VAR, str(max(1, available_cores() // max(1, jobs))))
    return env


@dataclass
class SymbolProcess:
    """One symbol's run in its own process (`crpbot_assets.symbol_run`)."""

    symbol: str
    run_id: str
    process: BaseProcess
    result_path: Path
    log_path: Path | None  # its stdout and stderr; None when they go to the console (--verbose)
    follower: RunFollower


def start_symbol_run(
    symbol: str,
    profile: str,
    instance: dg.DagsterInstance,
    work: Path,
    verbose: bool,
    env: dict[str, str],
    starter: BaseContext,
) -> SymbolProcess:
    run_id = make_new_run_id()
    result_path = work / f"{symbol}.json"
    log_path = None
    if not verbose:
        log_path = Path(instance.root_directory) / "logs" / f"{symbol}-{run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [symbol, "--profile", profile, "--run-id", run_id, "--result", str(result_path)]
    argv += ["--verbose"] if verbose else []
    process = starter.Process(
        target=run_in_forked_process,
        args=(argv, env, None if log_path is None else str(log_path)),
        name=f"{SYMBOL_RUN_MODULE} {symbol}",
    )
    process.start()
    return SymbolProcess(
        symbol, run_id, process, result_path, log_path, RunFollower(instance, run_id)
    )


def symbol_run_failure(run: SymbolProcess) -> str | None:
    """The run's failure reason (None: it succeeded), or why its process gave none."""
    if run.result_path.is_file():
        return json.loads(run.result_path.read_text())["failure"]
    tail = ""
    if run.log_path is not None and run.log_path.is_file():
        lines = run.log_path.read_text(errors="replace").strip().splitlines()
        tail = ": " + "\n".join(lines[-20:]) if lines else ""
    where = f" (full output: {run.log_path})" if run.log_path is not None else ""
    code = run.process.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    return f"its process {how} before its run ended{where}{tail}"


def stop_symbol_runs(runs: Sequence[SymbolProcess], signal_number: int) -> None:
    """Forward the signal (Dagster stops each run in progress), then wait; SIGKILL stragglers."""
    for run in runs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(run.process.pid, signal_number)
    deadline = time.monotonic() + STOP_SECONDS
    try:
        for run in runs:
            run.process.join(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second Ctrl-C: do not wait
        pass
    for run in runs:
        if run.process.exitcode is None:
            run.process.kill()
            run.process.join()


def run_all(
    symbols: Sequence[str],
    profile: str,
    instance: dg.DagsterInstance,
    watch: SignalWatch,
    *,
    jobs: int = 1,
    verbose: bool = False,
    console: Console | None = None,
) -> dict[str, str | None]:
    """Materialize every asset for `symbols`; returns run name → failure reason (None: ok).

    Up to `jobs` symbols run at once, each in its own process, so one symbol's crash fails that
    symbol only. Raises Interrupted (with the outcomes so far) when SIGINT or SIGTERM arrives:
    the runs in progress are stopped, and no further symbol starts.
    """
    console = console or Console()
    ui_url = os.environ.get(UI_URL_ENV_VAR, DEFAULT_UI_URL).rstrip("/")
    outcomes: dict[str, str | None] = {}
    pending = list(symbols)
    running: list[SymbolProcess] = []
    epochs = get_profile(profile).train.epochs
    board = None if verbose else ProgressBoard(console, symbols, epochs)
    if symbols:
        warm_trainer.ensure_server()  # before the environment that advertises it is taken
    env = symbol_run_env(jobs)
    starter = symbol_process_starter() if symbols else None

    def follow(run: SymbolProcess) -> None:
        update = run.follower.poll()
        if board is not None:
            board.apply(run.symbol, update)

    live = board or contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="crpbot-main-") as work, live:
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    run = start_symbol_run(
                        pending.pop(0), profile, instance, Path(work), verbose, env, starter
                    )
                    running.append(run)
                    url = f"{ui_url}/runs/{run.run_id}"
                    if board is not None:
                        board.started(run.symbol, url)
                    else:
                        print(f"\n=== {run.symbol}: symbol_pipeline ({profile}): {url}", flush=True)
                for run in list(running):
                    done = run.process.exitcode is not None
                    follow(run)  # after the exit code: a finished run's last events are in
                    if not done:
                        continue
                    running.remove(run)
                    outcomes[run.symbol] = symbol_run_failure(run)
                    if board is not None:
                        board.finished(run.symbol, outcomes[run.symbol])
                    else:
                        state = "ok" if outcomes[run.symbol] is None else "FAILED"
                        print(f"=== {run.symbol}: {state}", flush=True)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            signal_number = watch.received() or signal.SIGINT
            stop_symbol_runs(running, signal_number)
            for run in running:
                follow(run)  # what they logged up to the stop (e.g. a removed work folder)
                outcomes[run.symbol] = "interrupted"
            raise Interrupted(signal_number, outcomes) from None
        finally:
            stop_fork_server()
            warm_trainer.stop_own_server()

    if verbose:
        print("\n=== gate_report_job ===", flush=True)
    try:
        report = defs.resolve_job_def("gate_report_job").execute_in_process(
            instance=instance,
            run_config={} if verbose else {"loggers": QUIET_LOGGERS},
            raise_on_error=False,
            tags=process_tags(),
        )
    except KeyboardInterrupt:  # the signal came before or after Dagster's own handling
        report = None
    # Dagster turns a signal during the run into a failed result: stop as during a symbol's run.
    signal_number = watch.received()
    if report is None or signal_number is not None:
        outcomes["gate_report"] = "interrupted"
        raise Interrupted(signal_number or signal.SIGINT, outcomes)
    outcomes["gate_report"] = None if report.success else failure_summary(report)
    return outcomes


def symbol_results(
    symbols: Sequence[str], outcomes: Mapping[str, str | None], since: str
) -> list[SymbolResult]:
    """Each symbol's outcome, with its report entry when this command trained its model
    (the stored model finished after `since`); the summary table is made from these."""
    store = defs.resources["storage"].store
    results = []
    for symbol in symbols:
        entry = symbol_entry(store, symbol)
        fresh = entry["status"] != NOT_TRAINED and (entry.get("finished_at") or "") >= since
        results.append(
            SymbolResult(symbol, outcomes.get(symbol, "not run"), entry if fresh else None)
        )
    return results


def _symbols(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    known = symbol_partitions.get_partition_keys()
    if text is None:
        return known
    if not text.strip():
        # An empty value (e.g. an unset shell variable) must not widen the run to every symbol.
        parser.error(
            f"--symbols is empty; name at least one of {', '.join(known)} (e.g. --symbols BTC), "
            "or leave the flag out to run every symbol"
        )
    symbols = [s.strip().upper() for s in text.split(",")]
    unknown = sorted(set(symbols) - set(known))
    if unknown:
        parser.error(f"unknown symbol(s) {unknown}; known: {known} ({HOW_TO_ADD})")
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        parser.error(f"--symbols lists {', '.join(repeated)} more than once; name each once")
    return symbols


def dagster_home_problem(home: str) -> str | None:
    """Why the runs cannot be recorded under `home` (created when missing), or None."""
    try:
        os.makedirs(home, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as error:
        return (
            f"DAGSTER_HOME={home} is not writable ({error.strerror or error}): every run is "
            "recorded there. Fix: point DAGSTER_HOME at a folder this user may write, or make "
            "this one writable"
        )
    return None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crpbot_assets.main", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--symbols", help="comma-separated subset, default: every symbol")
    parser.add_argument(
        "--jobs",
        type=_positive,
        help="symbols run at once, each in its own process (default: every symbol when there "
        "are at most cores + 1, else one per core)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print Dagster's event records as they happen"
    )
    args = parser.parse_args(argv)
    try:
        profile = args.profile or default_profile_name()
    except ValueError as error:
        parser.error(str(error))
    symbols = _symbols(parser, args.symbols)

    os.environ.setdefault("DAGSTER_HOME", str(DAGSTER_HOME_DEFAULT))
    problem = dagster_home_problem(os.environ["DAGSTER_HOME"])
    if problem:
        print(f"{parser.prog}: {problem}", file=sys.stderr)
        return EXIT_SETTING
    console = Console()
    started_at = utc_now()
    with dg.DagsterInstance.get() as instance, SignalWatch() as watch:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id} was left in progress by a process that is gone: marked failed")
        try:
            outcomes = run_all(
                symbols,
                profile,
                instance,
                watch,
                jobs=args.jobs or default_jobs(len(symbols)),
                verbose=args.verbose,
                console=console,
            )
        except Interrupted as interrupted:
            not_run = [symbol for symbol in symbols if symbol not in interrupted.outcomes]
            print(
                f"stopped by {interrupted}: the run in progress was stopped"
                + (f"; not run: {', '.join(not_run)}" if not_run else ""),
                file=sys.stderr,
            )
            return 128 + interrupted.signal_number

    results = symbol_results(symbols, outcomes, started_at)
    console.print(summary_table(results))
    for result in results:
        # soft_wrap: one line per symbol however narrow the terminal, so it greps well.
        console.print(promotion_line(result), highlight=False, markup=False, soft_wrap=True)
    storage = defs.resources["storage"]
    print(f"\nDAGSTER_HOME: {os.environ['DAGSTER_HOME']}")
    print(where_line(storage.root))
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
