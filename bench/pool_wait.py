"""CPU while a run waits for a concurrency pool slot, with the pinned Dagster's claim-check
interval and with `crpbot_assets.dagster_fixes` applied, side by side in one process.

A one-op job in a one-slot pool runs while another "run" holds the slot for WAIT_S seconds; the
process's CPU over that wait, and the seconds from freeing the slot to the run's end, are printed
for both intervals. tests/test_dagster_fixes.py runs the same scenario (`wait_for_the_slot`).
Usage: python bench/pool_wait.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from crpbot_assets import dagster_fixes

POOL = "one_slot"
WAIT_S = 3.0
SETTLE_S = 1.0  # the run starts and finds the slot taken
HOLDER = ("another-run", "its-step")  # the run and step that hold the slot meanwhile


@dg.op(pool=POOL)
def needs_the_slot() -> int:
    return 1


@dg.job
def pool_job():
    needs_the_slot()


@dataclass(frozen=True)
class Wait:
    cpu_s: float  # this process's CPU over WAIT_S of the run's waiting
    still_waiting: bool  # the run had not ended when the slot was freed
    end_s: float  # from freeing the slot to the run's end
    success: bool


def wait_for_the_slot(home: Path) -> Wait:
    """Run `pool_job` on a new instance in `home` while HOLDER holds the pool's one slot."""
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\n"
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        if not storage.claim_concurrency_slot(POOL, *HOLDER).is_claimed:
            raise RuntimeError(f"the empty pool {POOL!r} refused its one slot")
        results: list[dg.ExecuteInProcessResult] = []
        run = threading.Thread(
            target=lambda: results.append(pool_job.execute_in_process(instance=instance))
        )
        run.start()
        try:
            time.sleep(SETTLE_S)
            cpu = time.process_time()
            time.sleep(WAIT_S)
            cpu = time.process_time() - cpu
            still_waiting = run.is_alive()
        finally:
            freed = time.monotonic()
            storage.free_concurrency_slot_for_step(*HOLDER)
            run.join(timeout=60)
        return Wait(
            cpu, still_waiting, time.monotonic() - freed, bool(results and results[0].success)
        )


def main() -> None:
    # Importing dagster_fixes changes nothing until apply(): the first run has Dagster's interval.
    assert (
        InstanceConcurrencyContext.interval_to_next_pending_claim_check
        is dagster_fixes.DAGSTERS_INTERVAL
    )
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        dagsters = wait_for_the_slot(Path(first))
        dagster_fixes.apply()
        fixed = wait_for_the_slot(Path(second))
    print(f"a run waiting {WAIT_S:.0f} s for a pool slot")
    print(f"  {'interval':<20} {'CPU s while waiting':>20} {'s to end once freed':>20}")
    for name, wait in (("Dagster's", dagsters), ("dagster_fixes", fixed)):
        print(f"  {name:<20} {wait.cpu_s:20.2f} {wait.end_s:20.1f}")


if __name__ == "__main__":
    main()
