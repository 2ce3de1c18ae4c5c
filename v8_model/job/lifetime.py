"""A training subprocess that never outlives the process that started it.

A parent killed with SIGKILL runs no clean-up, so its child would train on as an orphan, holding
memory and the emulated container folder. On Linux the child asks the kernel for SIGKILL when its
parent dies (`prctl(PR_SET_PDEATHSIG)`); the parent passes its pid in PARENT_PID_ENV_VAR so the
child can also tell whether the parent died before the request took effect.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
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


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
