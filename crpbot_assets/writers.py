"""At most one run writes a symbol's files at a time.

Every per-symbol asset calls `claim_symbol` before it writes. A run refuses to go on while another
run of the same partition is in progress that started before it: the first run to start keeps
the symbol, any later one fails at its next step with a message naming the run it yields to.
The order is the runs' start times in the instance, so two runs that start together agree on who
goes first, and a queued run that has not started yet never holds a symbol.

Runs launched through the queue (UI, backfills, sensors) do not even get that far: the shipped
instance files limit runs to one per `dagster/partition` value, so the second one waits.

A run recorded as in progress whose process is gone (killed with SIGKILL, a machine that
rebooted) would hold its symbol forever. Runs of the main command carry their process id
(`crpbot/pid`, `crpbot/host`); such a run whose process no longer exists is marked failed here,
and the daemon's run monitoring (enabled in the shipped instance files) does the same for runs
it launched.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from v8_model.lifetime import process_exists

PID_TAG = "crpbot/pid"
HOST_TAG = "crpbot/host"
PARTITION_TAG = "dagster/partition"
IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def process_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_is_gone(tags: dict[str, str]) -> bool:
    """True when the run's tags name a process on this host that no longer exists."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False  # another machine's run, or one without a process id: cannot tell
    return not process_exists(int(tags[PID_TAG]))


def fail_orphaned_runs(instance: dg.DagsterInstance, log=None) -> list[str]:
    """Mark in-progress runs whose process on this host is gone as failed; returns their ids."""
    orphaned = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        if process_is_gone(run.tags):
            message = (
                f"run {run.run_id} was left {run.status.value} by process {run.tags[PID_TAG]}, "
                "which no longer exists: marked failed"
            )
            instance.report_run_failed(run, message)
            if log is not None:
                log.warning(message)
            orphaned.append(run.run_id)
    return orphaned


def claim_symbol(context: dg.AssetExecutionContext) -> None:
    """Refuse to write this partition's files while an earlier-started run writes them."""
    symbol = context.partition_key
    instance = context.instance
    fail_orphaned_runs(instance, context.log)
    own = instance.get_run_record_by_id(context.run.run_id)
    own_start = own.start_time if own is not None and own.start_time is not None else float("inf")
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=IN_PROGRESS, tags={PARTITION_TAG: symbol})
    )
    earlier = [
        record
        for record in records
        if record.dagster_run.run_id != context.run.run_id
        and record.start_time is not None
        and (record.start_time, record.dagster_run.run_id) < (own_start, context.run.run_id)
    ]
    if earlier:
        first = min(earlier, key=lambda record: record.start_time)
        raise dg.Failure(
            description=f"another run ({first.dagster_run.run_id}, job "
            f"{first.dagster_run.job_name}) is writing {symbol}'s files and started first; "
            "this run stops so the two never mix their files. Wait for that run to finish (or "
            "cancel it), then run again.",
            metadata={"holding_run_id": first.dagster_run.run_id},
        )
