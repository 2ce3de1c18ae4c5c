"""One symbol's `symbol_pipeline` run in a process of its own, started by the main command.

    python -m crpbot_assets.symbol_run SYMBOL --profile demo --run-id ID --result FILE

A process per symbol lets the symbols train at the same time and keeps their failures apart: a
crash, an out-of-memory kill or a hung library takes down one symbol's run, not the command or
the other symbols. The run is recorded in the instance DAGSTER_HOME names, under the run id the
main command chose (it follows the run's events there); the outcome is written to FILE as JSON
`{"run_id", "success", "failure"}`, replacing the file in one step. Dagster's event records go
to the instance only, unless `--verbose` also prints them.

The main command does not start this module as a fresh interpreter: it forks each symbol's
process from a warm fork server (`crpbot_assets.symbol_processes`), which then runs
`run_in_forked_process`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
from dagster._utils.error import SerializableErrorInfo
from threadpoolctl import threadpool_limits

from crpbot_assets.definitions import defs
from crpbot_assets.profiles import PROFILES
from crpbot_assets.symbol_processes import THREADS_ENV_VAR
from crpbot_assets.writers import process_tags
from v8_model.job.lifetime import PARENT_PID_ENV_VAR, die_with_parent, die_with_process
from v8_model.record import strict_json
from v8_model.storage import atomic_write_text

# Dagster's default console logger, silenced: every event still reaches the instance.
QUIET_LOGGERS = {"console": {"config": {"log_level": "CRITICAL"}}}
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


def run_config(profile: str, verbose: bool) -> dict:
    config: dict = {"resources": {"profile": {"config": {"name": profile}}}}
    if not verbose:
        config["loggers"] = QUIET_LOGGERS
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crpbot_assets.symbol_run")
    parser.add_argument("symbol")
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    # The main command forwards SIGTERM; Dagster stops the run in progress on an interrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with dg.DagsterInstance.get() as instance:
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key=args.symbol,
            instance=instance,
            run_config=run_config(args.profile, args.verbose),
            raise_on_error=False,
            run_id=args.run_id,
            tags=process_tags(),
        )
    outcome = {
        "run_id": result.run_id,
        "success": result.success,
        "failure": None if result.success else failure_summary(result),
    }
    atomic_write_text(args.result, strict_json(outcome))
    return 0 if result.success else 1


def run_in_forked_process(
    argv: Sequence[str], env: Mapping[str, str], log_path: str | None
) -> None:
    """A symbol's process forked from the main command's fork server: what a fresh
    `python -m crpbot_assets.symbol_run` gets from the main command, done here.

    - its own session, as `start_new_session`: Ctrl-C reaches the main command only, which
      forwards it once to every symbol; SIGTERM's default action, which the fork server ignores;
    - the main command's environment (`env`, e.g. its share of the cores for the trainer), and
      that share for the BLAS libraries the fork server loaded before the share was known
      (they read OMP_NUM_THREADS once, as they load);
    - stdout and stderr in `log_path` (None: the console, for `--verbose`);
    - killed with the main command, even by SIGKILL (`env` names it in PARENT_PID_ENV_VAR), and
      its own trainer then dies with it;
    - the exit handlers a fresh interpreter runs (e.g. logging's flush), which a process of
      `multiprocessing` skips.
    """
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    if THREADS_ENV_VAR in env:
        threadpool_limits(int(env[THREADS_ENV_VAR]))
    if log_path is not None:
        output = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(output, sys.stdout.fileno())
        os.dup2(output, sys.stderr.fileno())
        os.close(output)
    die_with_process(int(os.environ.pop(PARENT_PID_ENV_VAR)))
    try:
        code = main(argv)
    finally:
        atexit._run_exitfuncs()
    sys.exit(code)


if __name__ == "__main__":
    # Killed with the process that started it, even by SIGKILL; its own trainer then dies with it.
    die_with_parent(os.environ)
    raise SystemExit(main())
