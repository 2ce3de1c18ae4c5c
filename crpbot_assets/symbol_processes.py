"""Where the main command's symbol processes come from: a warm fork server.

Each symbol's `symbol_pipeline` run has a process of its own (`crpbot_assets.symbol_run`).
Started as a fresh interpreter, every one of them imported the Dagster definitions, MLflow and
their libraries again: about 5 CPU s a symbol. The main command instead starts one fork server
(`multiprocessing`'s "forkserver" start method) as soon as it starts: it imports `WARM_IMPORTS`
once, in parallel with the main command's own imports, then forks one process per symbol, which
finds those modules already imported.

The fork server runs no Python thread and holds nothing of the main command (no Dagster instance, no
console, no open run); it ends when the main command ends, however it ends. Its children are set
up as the fresh interpreters were (`crpbot_assets.symbol_run.run_in_forked_process`). This module
imports only the standard library, so that the main command can start the fork server before it
imports anything heavy.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import tempfile
from collections.abc import Iterator
from multiprocessing.context import BaseContext

SYMBOL_RUN_MODULE = "crpbot_assets.symbol_run"
# Each process's share of the cores, read by torch and the BLAS libraries as they load.
THREADS_ENV_VAR = "OMP_NUM_THREADS"
# The run's module (with the Dagster definitions), then what a run imports on first use: MLflow's
# client and its SQLAlchemy stores (the tracking), the features' filters; last, the freeze of
# everything imported before a fork (see that module).
WARM_IMPORTS = (
    SYMBOL_RUN_MODULE,
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "scipy.signal",
    "crpbot_assets.fork_server_freeze",
)


# The fork server listens on a Unix socket, `<temp folder>/pymp-XXXXXXXX/listener-XXXXXXXX`, and
# a socket's path holds at most 107 bytes.
SOCKET_PATH_MAX = 107
SOCKET_NAME_LENGTH = len("/pymp-XXXXXXXX/listener-XXXXXXXX")


def socket_temp_folder(name_length: int) -> str:
    """The temporary folder, or a shorter standard one when a socket's path of `name_length`
    characters below it would not fit (e.g. a deep TMPDIR), as Python 3.13's multiprocessing
    does itself."""
    longest = SOCKET_PATH_MAX - name_length
    if len(tempfile.gettempdir()) <= longest:
        return tempfile.gettempdir()
    short = [
        folder
        for folder in ("/tmp", "/var/tmp", "/usr/tmp")
        if len(folder) <= longest and os.access(folder, os.W_OK | os.X_OK)
    ]
    if not short:
        raise OSError(
            f"the temporary folder {tempfile.gettempdir()} is too long for a Unix socket's path "
            f"(at most {longest} characters) and none of /tmp, /var/tmp, /usr/tmp is writable; "
            "set TMPDIR to a shorter folder"
        )
    return short[0]


@contextlib.contextmanager
def _socket_temp_folder() -> Iterator[None]:
    """`tempfile`'s folder is one that fits the fork server's socket, meanwhile."""
    before, tempfile.tempdir = tempfile.tempdir, socket_temp_folder(SOCKET_NAME_LENGTH)
    try:
        yield
    finally:
        tempfile.tempdir = before


def symbol_process_starter() -> BaseContext:
    """The multiprocessing context whose `Process` forks a symbol's process from the warm fork
    server; starts the fork server on the first call (it then imports while the caller goes on)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WARM_IMPORTS))
    # The fork server ignores SIGTERM (it ignores SIGINT itself), inherited across its exec: a
    # SIGTERM to the main command's whole process group must not end it while the symbols it
    # forked run, because their exit codes reach the main command through it. The main command
    # forwards the signal to them.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with _socket_temp_folder():
            multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return context


def stop_fork_server() -> None:
    """Stop the fork server and wait for it, once the symbols' processes have ended.

    Waited for, its children's resource usage reaches this process's (e.g. `/usr/bin/time`'s
    peak RSS), and no process is left behind. `_stop` is multiprocessing's own way to stop it
    (CPython's tests use it); there is no public one.
    """
    multiprocessing.forkserver._forkserver._stop()
