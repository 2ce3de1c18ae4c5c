"""CPU while a run waits for a concurrency pool slot, with the pinned Dagster's claim-check
interval and with `crpbot_assets.dagster_fixes` applied, side by side in one process.

A one-op job in a one-slot pool is run while another "run" holds the slot for WAIT_S seconds;
the process's CPU over that wait, and the seconds from freeing the slot to the run's end, are
printed for both intervals. Usage: python bench/pool_wait.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

from crpbot_assets import dagster_fixes

POOL = "bench"
WAIT_S = 3.0
SETTLE_S = 1.0  # the run starts and finds the slot taken


@dg.op(pool=POOL)
def needs_the_slot() -> int:
    return 1


@dg.job
def pool_job():
    needs_the_slot()


def wait_for_the_slot() -> tuple[float, float]:
    """(CPU s over WAIT_S of waiting, seconds from the slot's release to the run's end)."""
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n"
            "concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\n"
        )
        with dg.DagsterInstance.from_config(home) as instance:
            storage = instance.event_log_storage
            storage.initialize_concurrency_limit_to_default(POOL)
            storage.claim_concurrency_slot(POOL, "holder", "step")
            run = threading.Thread(
                target=pool_job.execute_in_process, kwargs={"instance": instance}
            )
            run.start()
            time.sleep(SETTLE_S)
            cpu = time.process_time()
            time.sleep(WAIT_S)
            cpu = time.process_time() - cpu
            freed = time.monotonic()
            storage.free_concurrency_slot_for_step("holder", "step")
            run.join(timeout=60)
            return cpu, time.monotonic() - freed


def main() -> None:
    # Importing dagster_fixes changes nothing until apply(): the first run has Dagster's interval.
    assert (
        InstanceConcurrencyContext.interval_to_next_pending_claim_check
        is dagster_fixes.DAGSTERS_INTERVAL
    )
    dagsters = wait_for_the_slot()
    dagster_fixes.apply()
    fixed = wait_for_the_slot()
    print(f"a run waiting {WAIT_S:.0f} s for a pool slot")
    print(f"  {'interval':<20} {'CPU s while waiting':>20} {'s to end once freed':>20}")
    for name, (cpu, after) in (("Dagster's", dagsters), ("dagster_fixes", fixed)):
        print(f"  {name:<20} {cpu:20.2f} {after:20.1f}")


if __name__ == "__main__":
    main()
