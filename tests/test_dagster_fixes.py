"""crpbot_assets.dagster_fixes: a run waiting for a pool slot sleeps instead of spinning a core."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from crpbot_assets import definitions  # noqa: F401  (loading the definitions applies the fix)
from crpbot_assets.dagster_fixes import DAGSTERS_INTERVAL, seconds_to_next_claim_check

POOL = "training"
WAIT_S = 3.0
# A spinning loop takes most of a core even on a busy machine; a sleeping one almost nothing.
MAX_CPU_SHARE_WHILE_WAITING = 0.2


def _waiting_context(seconds_ahead: float) -> SimpleNamespace:
    """What both intervals read: one step waiting for a slot, checked again in `seconds_ahead`."""
    return SimpleNamespace(
        _pending_claims={"model"}, _pending_timeouts={"model": time.time() + seconds_ahead}
    )


def test_the_pinned_dagster_still_needs_the_fix():
    # When this fails, Dagster fixed the interval itself: remove crpbot_assets/dagster_fixes.py.
    assert DAGSTERS_INTERVAL(_waiting_context(5.0)) <= 0


def test_the_interval_is_the_time_to_the_next_claim_check():
    assert 4.0 < seconds_to_next_claim_check(_waiting_context(5.0)) <= 5.0
    assert seconds_to_next_claim_check(_waiting_context(-1.0)) == 0.0  # overdue: check now
    nothing_pending = SimpleNamespace(_pending_claims=set(), _pending_timeouts={})
    assert seconds_to_next_claim_check(nothing_pending) == 0.0


@dg.op(pool=POOL)
def needs_the_slot() -> int:
    return 1


@dg.job
def pool_job():
    needs_the_slot()


def test_a_run_waiting_for_its_pool_slot_sleeps_and_takes_the_slot_once_free(tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\n"
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        assert storage.claim_concurrency_slot(POOL, "another-run", "its-step").is_claimed
        results = []
        run = threading.Thread(
            target=lambda: results.append(pool_job.execute_in_process(instance=instance))
        )
        run.start()
        try:
            time.sleep(1.0)  # the run starts and finds the slot taken
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(WAIT_S)
            cpu_share = (time.process_time() - cpu) / (time.monotonic() - wall)
            assert run.is_alive() and not results, "the run did not wait for the slot"
        finally:
            storage.free_concurrency_slot_for_step("another-run", "its-step")
            run.join(timeout=60)
    assert cpu_share < MAX_CPU_SHARE_WHILE_WAITING, f"{cpu_share:.0%} of a core while waiting"
    [result] = results
    assert result.success
