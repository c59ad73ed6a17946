"""Keep large allocations in glibc's heap, so that a model's per-batch activations reuse warm pages.

A batch of 4 ESPCN x2 frames at 640x360 allocates a few hundred MB of activations and frees them again. glibc
serves blocks that large with mmap and returns them with munmap, so every batch faulted its pages in anew: the
CLI spent 7.4 s of system time (3.2 M page faults) on 120 frames where vspipe | ffmpeg spent 1.1 s. With mmap
off and no trimming, freed blocks stay mapped and the next batch reuses them: 0.8 s, 0.2 M faults
(docs/BENCHMARKS.md). The price is that the process keeps its peak heap (+7% there).

One arena for all threads, in `vidsr upscale` only (`share_one_arena`, before any thread starts): the CPU runner
computes in two threads (vidsr/compute/runner.py), and glibc gives each thread an arena of 64 MB heaps of its own,
which it shrinks and grows page by page. With them, batches of 4 faulted 1.45 M pages in on the same 120
frames; with the main arena alone, 0.29 M. Processes that host the engine among other work (vspipe's filter
threads, the web server, library users) keep glibc's arenas: the setting is measured on the CLI alone.

glibc only (musl, macOS and Windows allocate differently): elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER_TRIM = 2**31 - 1  # mallopt takes an int; the largest keeps the heap's top in place


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@functools.cache  # once per process; the settings are idempotent, so a racing second call does no harm
def keep_large_allocations() -> bool:
    """Serve large blocks from the heap and keep freed memory mapped; True if applied."""
    return is_glibc() and _set_options()


@functools.cache
def share_one_arena() -> bool:
    """All threads allocate from the main arena (kept warm by `keep_large_allocations`): call it before any
    thread has allocated, since glibc keeps arenas once made; True if applied."""
    return is_glibc() and bool(_mallopt()(M_ARENA_MAX, 1))


def _mallopt() -> ctypes._CFuncPtr:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt


def _set_options() -> bool:
    mallopt = _mallopt()
    # both: the heap without mmap but with trimming would still give the pages back after every batch
    return bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)) and bool(mallopt(M_MMAP_MAX, 0))
