"""A fix to the pinned Dagster (1.13.27), applied when the definitions load: a run whose step waits
for a concurrency pool slot sleeps until its next claim check instead of spinning a core.

`InstanceConcurrencyContext.interval_to_next_pending_claim_check` returns `min([0, *waits])`,
never more than 0, so `ActiveExecution.sleep_til_ready` never sleeps and the in-process executor's
loop asks for the next step again at once, until the slot comes. With deploy/dagster.yaml (the
`model` step's pool `sagemaker_training`, one slot), every symbol run of a backfill that waited for
another symbol's SageMaker job (up to two hours) kept a core of the Dagster host busy.

The fix returns the time until the earliest pending claim check, never less than 0. Dagster checks
the claim at that time anyway, so a freed slot is taken no later than before.
tests/test_dagster_fixes.py checks that the pinned Dagster still has the bug: once an upgrade
fixes it, that test fails and this module goes.
"""

from __future__ import annotations

import time

from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext

DAGSTERS_INTERVAL = InstanceConcurrencyContext.interval_to_next_pending_claim_check


def seconds_to_next_claim_check(context: InstanceConcurrencyContext) -> float:
    """Seconds until the earliest pending claim is checked again; 0 when none is pending."""
    # Dagster's own attributes: the steps waiting for a slot, and when each is checked next.
    if not context._pending_claims or not context._pending_timeouts:
        return 0.0
    now = time.time()
    return max(0.0, min(ready_at - now for ready_at in context._pending_timeouts.values()))


def apply() -> None:
    """Replace Dagster's interval with `seconds_to_next_claim_check` (idempotent)."""
    InstanceConcurrencyContext.interval_to_next_pending_claim_check = seconds_to_next_claim_check
