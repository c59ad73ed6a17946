"""The engine keeps large allocations in glibc's heap (issue 17 item 19): checked in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidsr import heap

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not heap.is_glibc(), reason="mallopt tuning is glibc-only")

# Allocates 256 MiB with malloc and prints how many more of glibc's blocks are mmapped (mallinfo2's hblks) after it.
MMAPPED_BLOCKS = """
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "engine":
    import vidsr
    vidsr.Upscaler("espcn-x2", device="cpu")
before = libc.mallinfo2().hblks
block = libc.malloc(256 << 20)
print(libc.mallinfo2().hblks - before)
"""


def new_mmapped_blocks_for_a_large_malloc(setup: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", MMAPPED_BLOCKS, setup], capture_output=True, text=True,
                            timeout=120, env=env, check=True)
    return int(result.stdout.split()[-1])


def test_an_upscaler_keeps_large_blocks_in_the_heap() -> None:
    assert new_mmapped_blocks_for_a_large_malloc("plain") == 1  # glibc's default: a block this big is mmapped
    assert new_mmapped_blocks_for_a_large_malloc("engine") == 0


def test_applied_once_and_reported() -> None:
    assert heap.keep_large_allocations() is True
    assert heap.keep_large_allocations() is True
