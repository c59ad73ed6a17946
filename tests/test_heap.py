"""The engine keeps large allocations in glibc's heap (issue 17 item 19): checked in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidsr.cli import main
from vidsr.compute import heap

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


def count_in_a_fresh_process(script: str, setup: str) -> int:
    """The number `script` prints last, run with `setup` ("plain", or "engine": after making an Upscaler)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script, setup], capture_output=True, text=True, timeout=120,
                            env=env, check=True)
    return int(result.stdout.split()[-1])


def test_an_upscaler_keeps_large_blocks_in_the_heap() -> None:
    assert count_in_a_fresh_process(MMAPPED_BLOCKS, "plain") == 1  # glibc's default: a block this big is mmapped
    assert count_in_a_fresh_process(MMAPPED_BLOCKS, "engine") == 0


# Mallocs 1 MiB in a new thread and prints how many arenas glibc's malloc_stats then lists.
ARENAS_AFTER_A_THREAD_ALLOCATES = """
import ctypes, os, sys, tempfile, threading

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
if sys.argv[1] == "engine":  # as `vidsr upscale` starts
    from vidsr.compute import heap
    heap.share_one_arena()
blocks = []
thread = threading.Thread(target=lambda: blocks.append(libc.malloc(1 << 20)))
thread.start()
thread.join()
with tempfile.TemporaryFile() as report:  # malloc_stats writes to file descriptor 2
    saved = os.dup(2)
    os.dup2(report.fileno(), 2)
    libc.malloc_stats()
    os.dup2(saved, 2)
    report.seek(0)
    print(sum(line.startswith(b"Arena ") for line in report))
"""


def test_threads_share_one_arena() -> None:
    """In `vidsr upscale` the compute threads allocate from the heap kept warm, not from arenas of their own."""
    assert count_in_a_fresh_process(ARENAS_AFTER_A_THREAD_ALLOCATES, "plain") >= 2
    assert count_in_a_fresh_process(ARENAS_AFTER_A_THREAD_ALLOCATES, "engine") == 1


def test_the_upscale_command_shares_one_arena(make_clip, random_espcn, tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(heap, "share_one_arena", lambda: calls.append(True))
    src = make_clip("in.mp4", width=32, height=24, frames=2)
    assert main(["upscale", str(src), "-m", str(random_espcn), "-o", str(tmp_path / "out.mp4"), "-q"]) == 0
    assert calls == [True]


def test_applied_once_and_reported() -> None:
    assert heap.keep_large_allocations() is True
    assert heap.keep_large_allocations() is True
