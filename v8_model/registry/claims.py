"""A writer claim on a symbol's production folder, held in the store beside it.

Promotion, rollback and the clean-up of old versions change `production/{SYMBOL}/` together: a
pointer switch and the deletion of the versions it no longer names. Two of them at once could
delete the version the other is about to name. Each takes the claim first, whoever runs it (a
Dagster run, `crpbot rollback`, another host against the same S3 root): the claim lives in the
store (`production/{SYMBOL}/writer.json`), created only if absent (a hard link locally, an S3
conditional PUT with If-None-Match), so exactly one writer holds it.

The claim records who holds it (host, process id, and what the caller adds: a Dagster run id or
the command). A claim whose process is gone on this host (SIGKILL, a reboot) is stale and is
taken over without a person; a live holder is waited for up to `wait_s`, then the error names
it. A claim from another host cannot be checked from here: its message says which file to delete
once that host's process is known to be gone. Taking over a stale claim is a delete and a
create: the claim is read again first, which narrows (does not close) the window in which two
waiters that both saw the same stale claim could each delete what the other just created.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from v8_model.job.lifetime import process_exists
from v8_model.layout import production_folder
from v8_model.record import strict_json
from v8_model.storage import Store

CLAIM_FILE = "writer.json"
DEFAULT_WAIT_S = 120.0  # a promotion copies a few MiB; two minutes covers a slow S3
POLL_S = 0.05


class ClaimError(RuntimeError):
    """The claim is held by another live writer past the wait; the message names it."""


def claim_key(symbol: str) -> str:
    return f"{production_folder(symbol)}/{CLAIM_FILE}"


def _read(store: Store, key: str) -> dict | None:
    """The claim's record; None when it is gone (released meanwhile) or unreadable."""
    try:
        record = json.loads(store.read_text(key))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def is_stale(record: dict) -> bool:
    """True when the claim names a process on this host that no longer exists."""
    pid = str(record.get("pid", ""))
    if record.get("host") != socket.gethostname() or not pid.isdigit():
        return False  # another host's claim, or an unreadable one: cannot tell from here
    return not process_exists(int(pid))


def describe(record: dict) -> str:
    if not record:
        return "an unreadable claim"
    who = ", ".join(f"{name} {record[name]}" for name in ("run_id", "command") if name in record)
    return (
        f"{who or 'a writer'} (pid {record.get('pid')} on {record.get('host')}, since "
        f"{record.get('claimed_at')})"
    )


@contextmanager
def symbol_writer_claim(
    store: Store,
    symbol: str,
    holder: dict[str, str] | None = None,
    *,
    wait_s: float = DEFAULT_WAIT_S,
    log=None,
) -> Iterator[dict]:
    """Hold `symbol`'s production writer claim for the body; yields the claim's record."""
    key = claim_key(symbol)
    record = {
        **(holder or {}),
        "symbol": symbol,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": uuid.uuid4().hex,
        "claimed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    deadline = time.monotonic() + wait_s
    while not store.create_exclusive(key, strict_json(record, indent=1).encode("utf-8")):
        current = _read(store, key)
        if current is None:
            continue  # released between the two calls: try again at once
        # Re-read before deleting: another waiter may have taken the stale claim over already.
        if is_stale(current) and _read(store, key) == current:
            if log is not None:
                log(f"{store.uri(key)}: taking over the stale claim of {describe(current)}")
            store.delete(key)
            continue
        if time.monotonic() > deadline:
            raise ClaimError(
                f"{symbol}'s production folder is being changed by {describe(current)} "
                f"(claim {store.uri(key)}, waited {wait_s:g} s). Nothing was changed. Fix: wait "
                "for it to finish and retry; if that process is gone on another host, delete "
                f"{store.uri(key)}"
            )
        time.sleep(POLL_S)
    try:
        yield record
    finally:
        # Release only our own claim: a stale-claim takeover may have replaced it.
        held = _read(store, key)
        if held is not None and held.get("token") == record["token"]:
            store.delete(key)
