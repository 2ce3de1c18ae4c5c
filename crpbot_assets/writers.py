"""At most one run writes a symbol's files at a time.

Every per-symbol asset calls `claim_symbol` before it writes. A run refuses to go on while another
run of the same partition is in progress that started before it: the first run to start keeps
the symbol, any later one fails at its next step with a message naming the run it yields to.
The order is the runs' start times in the instance, so two runs that start together agree on who
goes first, and a queued run that has not started yet never holds a symbol.

Runs launched through the queue (UI, backfills, sensors) do not even get that far: the shipped
instance files limit runs to one per `dagster/partition` value, so the second one waits.

The claim records who holds it: the run (its id), the host, the run's process (`crpbot/pid`:
the process that orchestrates it: the main command's, `dagster asset materialize`'s, or the run
worker the UI's launcher started) and the step's process (`crpbot/step_pid`, which the
multiprocess executor starts apart from it). The main command tags its runs when it creates
them; every other run is tagged by its first step's claim. A run recorded as in progress whose
recorded processes are all gone on this host (SIGKILL, a machine that rebooted) is stale: the
next claim of any symbol marks it failed, so no person has to. While one of them lives (a step
worker that outlived a killed `dagster asset materialize` is still writing) the symbol stays held.

What dagster.yaml's run monitoring does and does not cover (deploy/dagster.yaml): the daemon
fails runs stuck in STARTING past `start_timeout_seconds`, ends runs STARTED for longer than
`max_runtime_seconds` (3 h) and frees pool slots of ended runs. DefaultRunLauncher has no
run-worker health check (`supports_check_run_worker_health` is False), so monitoring does not
notice a dead run process before the 3 h bound, and it never sees runs when the daemon is not
running; the claim above does. A process id reused by an unrelated process keeps a stale run
held until monitoring's bound; a run on another host is never judged from here.
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import dagster as dg

from v8_model.job.lifetime import process_exists

PID_TAG = "crpbot/pid"
STEP_PID_TAG = "crpbot/step_pid"
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


def holder_tags(existing: dict[str, str]) -> dict[str, str]:
    """Tags naming this step's processes: the run's (kept when already recorded) and the step's."""
    # A step of the multiprocess executor is a multiprocessing child of the run's process; an
    # in-process step runs in it.
    parent = multiprocessing.parent_process()
    run_pid = str(parent.pid if parent is not None else os.getpid())
    if existing.get(HOST_TAG) == socket.gethostname() and existing.get(PID_TAG):
        run_pid = existing[PID_TAG]
    return {PID_TAG: run_pid, HOST_TAG: socket.gethostname(), STEP_PID_TAG: str(os.getpid())}


def process_is_gone(tags: dict[str, str]) -> bool:
    """True when the run's tags name processes on this host and none of them exists any more."""
    pids = [tags.get(PID_TAG, ""), tags.get(STEP_PID_TAG, "")]
    if tags.get(HOST_TAG) != socket.gethostname() or not pids[0].isdigit():
        return False  # another machine's run, or one without a process id: cannot tell
    return not any(process_exists(int(pid)) for pid in pids if pid.isdigit())


def fail_orphaned_runs(instance: dg.DagsterInstance, log=None) -> list[str]:
    """Mark in-progress runs whose process on this host is gone as failed; returns their ids."""
    orphaned = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        if process_is_gone(run.tags):
            message = (
                f"run {run.run_id} was left {run.status.value} by process {run.tags[PID_TAG]}, "
                "which no longer exists: marked failed"
                + (
                    f" (its step process {run.tags[STEP_PID_TAG]} is gone too)"
                    if STEP_PID_TAG in run.tags
                    else ""
                )
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
    # Record who holds the claim before judging others, so a later run can judge this one.
    instance.add_run_tags(context.run.run_id, holder_tags(context.run.tags))
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
        tags = first.dagster_run.tags
        holder = ", ".join(
            f"{name} {tags[tag]}"
            for name, tag in (("host", HOST_TAG), ("pid", PID_TAG), ("step pid", STEP_PID_TAG))
            if tag in tags
        )
        raise dg.Failure(
            description=f"another run ({first.dagster_run.run_id}, job "
            f"{first.dagster_run.job_name}{', ' + holder if holder else ''}) is writing "
            f"{symbol}'s files and started first; "
            "this run stops so the two never mix their files. Wait for that run to finish (or "
            "cancel it), then run again.",
            metadata={"holding_run_id": first.dagster_run.run_id},
        )
