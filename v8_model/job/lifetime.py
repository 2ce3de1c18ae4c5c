"""Processes that never outlive the process that started them.

A parent killed with SIGKILL runs no clean-up, so its child would train on as an orphan, holding
memory and the emulated container folder. On Linux the child asks the kernel for SIGKILL when its
parent dies (`prctl(PR_SET_PDEATHSIG)`); the parent passes its pid in PARENT_PID_ENV_VAR so the
child can also tell whether the parent died before the request took effect. A process whose
parent is a fork server, not the process that asked for it, watches that process instead
(`die_with_process`).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading
from collections.abc import Mapping

PARENT_PID_ENV_VAR = "CRPBOT_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(env: Mapping[str, str]) -> None:
    """Arrange SIGKILL on the parent's death when PARENT_PID_ENV_VAR names the parent."""
    expected = env.get(PARENT_PID_ENV_VAR)
    if not expected:
        return  # not started by a trainer that asked for it (e.g. inside SageMaker)
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if str(os.getppid()) != expected:  # the parent died before the request took effect
        raise SystemExit(f"parent process {expected} is gone; not training")


def die_with_process(pid: int) -> None:
    """SIGKILL this process when process `pid` ends, whichever process is its parent.

    For a process forked by a fork server on `pid`'s behalf: the kernel's parent-death signal
    would follow the fork server. A daemon thread waits on a pidfd of `pid` (Linux 5.3+), which
    becomes readable when that process ends, however it ends.
    """
    try:
        watched = os.pidfd_open(pid)
    except ProcessLookupError:
        raise SystemExit(f"process {pid} is gone; not running") from None

    def wait_then_die() -> None:
        select.select([watched], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name=f"die-with-{pid}", daemon=True).start()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
