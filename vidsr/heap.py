"""Keep large allocations in glibc's heap, so that a model's per-batch activations reuse warm pages.

A batch of ESPCN x2 on 640x360 frames allocates ~1 GB of activations and frees it again. glibc serves blocks
that large with mmap and returns them with munmap, so every batch faults all of its pages in anew: on a 2-core
machine the CLI spent 25 s of system time (5.7 M page faults) on 120 frames, more than the model's own work
through vspipe. With mmap off for the main arena and no trimming, freed blocks stay mapped and the next batch
reuses them (docs/BENCHMARKS.md: sys 25.3 s -> 2.0 s). The price is that the process keeps its peak heap.

glibc only (musl, macOS and Windows allocate differently): elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import platform
import threading

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # mallopt takes an int; the largest keeps the heap's top in place

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_large_allocations() -> bool:
    """Serve large blocks from the heap and keep freed memory mapped; once per process, True if applied."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = is_glibc() and _set_options()
        return _applied


def _set_options() -> bool:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # both: the heap without mmap but with trimming would still give the pages back after every batch
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)) and bool(mallopt(M_MMAP_MAX, 0))
