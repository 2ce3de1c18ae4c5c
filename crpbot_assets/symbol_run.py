"""One symbol's `symbol_pipeline` run in a process of its own, started by the main command.

    python -m crpbot_assets.symbol_run SYMBOL --profile demo --run-id ID --result FILE

A process per symbol lets the symbols train at the same time and keeps their failures apart: a
crash, an out-of-memory kill or a hung library takes down one symbol's run, not the command or
the other symbols. The run is recorded in the instance DAGSTER_HOME names, under the run id the
main command chose (it follows the run's events there); the outcome is written to FILE as JSON
`{"run_id", "success", "failure"}`, replacing the file in one step. Dagster's event records go
to the instance only, unless `--verbose` also prints them.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from crpbot_assets.definitions import defs
from crpbot_assets.main import QUIET_LOGGERS, failure_summary
from crpbot_assets.profiles import PROFILES
from crpbot_assets.writers import process_tags
from v8_model.job.lifetime import die_with_parent
from v8_model.record import strict_json
from v8_model.storage import atomic_write_text


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
    # Killed with the main command, even by SIGKILL; its own trainer then dies with it.
    die_with_parent(os.environ)
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


if __name__ == "__main__":
    raise SystemExit(main())
