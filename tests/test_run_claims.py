"""A run's claim on its symbol names its processes; a claim whose processes are gone is stale.

The red team's case, against a real Dagster instance and the real `dagster` command: SIGKILL of
`dagster asset materialize` leaves its run STARTED (its step worker finishes with parent 1), and
every later run of that symbol used to be refused until someone marked the run failed by hand.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from crpbot_assets.definitions import defs
from crpbot_assets.writers import HOST_TAG, PID_TAG, STEP_PID_TAG, process_is_gone
from v8_model.job.lifetime import process_exists

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def _wait(condition, what: str, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def _claimed_run(home: Path) -> dg.DagsterRun | None:
    """The in-progress run once its step has recorded its claim, else None."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            if STEP_PID_TAG in record.dagster_run.tags:
                return record.dagster_run
    return None


def test_kill_9_of_dagster_asset_materialize_leaves_a_stale_claim_the_next_run_recovers(tmp_path):
    home, root = tmp_path / "home", tmp_path / "root"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CRPBOT_ROOT": str(root)}
    # Enough synthetic days that the step is still writing when the command is killed.
    config = {"ops": {"candles": {"config": {"days": 400}}}}
    command = [
        str(Path(sys.executable).with_name("dagster")),
        *("asset", "materialize", "-m", "crpbot_assets.definitions"),
        *("--select", "candles", "--partition", "BTC", "--config-json", json.dumps(config)),
    ]
    # The instance's storage exists before the command starts: Dagster's SQLite storage creates
    # its tables without a lock, so this test's polling and the command's start-up must not both
    # create them ("table secondary_indexes already exists").
    dg.DagsterInstance.from_config(str(home)).dispose()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        run = _wait(lambda: _claimed_run(home), "the candles step to claim BTC")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT_S)

    # The claim names the run's process (the killed command) and the step's, on this host.
    assert run.tags[PID_TAG] == str(process.pid)
    assert run.tags[HOST_TAG] == os.uname().nodename
    step_pid = int(run.tags[STEP_PID_TAG])
    # The step worker may outlive the command; while it writes, the claim is not stale.
    _wait(lambda: not process_exists(step_pid), "the orphaned step worker to finish")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        stuck = instance.get_run_by_id(run.run_id)
        assert stuck.status == dg.DagsterRunStatus.STARTED  # what kill -9 leaves behind
        assert process_is_gone(stuck.tags)

        # The next run of BTC takes the symbol without anyone marking the dead run failed.
        result = defs.resolve_job_def("symbol_pipeline").execute_in_process(
            partition_key="BTC",
            instance=instance,
            run_config={"ops": {"candles": {"config": {"days": 31}}}},
            asset_selection=[dg.AssetKey("candles")],
            raise_on_error=False,
        )
        assert result.success
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        [failed] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"by process {process.pid}, which no longer exists" in failed.message
        assert f"step process {step_pid} is gone too" in failed.message


def test_a_claim_whose_process_lives_is_not_stale():
    own = {HOST_TAG: os.uname().nodename, PID_TAG: str(os.getpid())}
    assert not process_is_gone(own)
    assert not process_is_gone({**own, HOST_TAG: "another-host"})  # cannot tell: kept
