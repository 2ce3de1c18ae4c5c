"""Giving freed heap memory back to the operating system between walk-forward folds.

Each fold reads the features file afresh, scales it and frees it. glibc's allocator keeps the
freed pages of many mid-sized arrays (pandas and numpy temporaries that fall under its raised
mmap threshold) in its heap, so without a trim every fold would add its leftovers to the peak
the main model set. `malloc_trim(0)` returns them; where the C library has no `malloc_trim`
(macOS, musl) only the garbage collector runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import pyarrow as pa


def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Collect garbage, then hand the allocator's free pages back to the OS (glibc only)."""
    gc.collect()
    pa.default_memory_pool().release_unused()  # Arrow's own pool caches freed column buffers
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
