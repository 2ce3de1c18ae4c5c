"""crpbot_assets.dagster_fixes: a run waiting for a pool slot sleeps instead of spinning a core."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from crpbot_assets import definitions  # noqa: F401  (loading the definitions applies the fix)
from crpbot_assets.dagster_fixes import DAGSTERS_INTERVAL, seconds_to_next_claim_check

REPO = Path(__file__).resolve().parents[1]
# The scenario bench/pool_wait.py measures: a run waiting for the one slot of a pool.
spec = importlib.util.spec_from_file_location("pool_wait", REPO / "bench" / "pool_wait.py")
pool_wait = sys.modules["pool_wait"] = importlib.util.module_from_spec(spec)  # for its dataclass
spec.loader.exec_module(pool_wait)

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


def test_a_run_waiting_for_its_pool_slot_sleeps_and_takes_the_slot_once_free(tmp_path: Path):
    wait = pool_wait.wait_for_the_slot(tmp_path)
    assert wait.still_waiting, "the run did not wait for the slot"
    cpu_share = wait.cpu_s / pool_wait.WAIT_S
    assert cpu_share < MAX_CPU_SHARE_WHILE_WAITING, f"{cpu_share:.0%} of a core while waiting"
    assert wait.success
