"""Frame batching and the worker pool behind `sr.upscale`.

VapourSynth asks for frames one at a time, from several threads, in any order. Frames are grouped by
index (frames g*B .. g*B+B-1 form batch g), so a batch always holds the same frames whatever the request
order and the output is deterministic. The first request of a batch runs it on a free worker; requests
for its other frames wait for that result instead of computing it again.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np
import torch
import vapoursynth as vs

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                 np.dtype(np.float32): torch.float32}

# Engine call: per-plane (N,h,w) tensors on the device + the batch's first frame props -> per-plane outputs.
EngineCall = Callable[[list[torch.Tensor], vs.FrameProps], Sequence[torch.Tensor]]


def batch_members(clip: vs.VideoNode, batch_size: int) -> list[vs.VideoNode]:
    """Clips whose frame n is member k of the batch holding frame n, for k in 0..batch_size-1.

    The last, partial batch is padded by repeating the last frame.
    """
    if batch_size == 1:
        return [clip]
    core = vs.core
    padded = clip + clip[-1] * (batch_size - 1)
    return [
        core.std.Interleave([core.std.SelectEvery(padded, batch_size, k)] * batch_size,
                            modify_duration=False)[: clip.num_frames]
        for k in range(batch_size)
    ]


class Worker:
    """One execution stream: an engine call plus, on CUDA, its own stream and pinned host buffers."""

    def __init__(self, engine: EngineCall, device: torch.device) -> None:
        self.engine = engine
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pinned: dict[tuple, torch.Tensor] = {}

    def run(self, frames: Sequence[vs.VideoFrame]) -> list[np.ndarray]:
        """Frames of one batch -> per-plane (N,h,w) numpy outputs."""
        planes = [self._stack([np.asarray(f[p]) for f in frames], ("in", p))
                  for p in range(frames[0].format.num_planes)]
        if self.stream is None:
            return [out.numpy() for out in self.engine(planes, frames[0].props)]
        with torch.cuda.stream(self.stream):
            inputs = [p.to(self.device, non_blocking=True) for p in planes]
            outputs = self.engine(inputs, frames[0].props)
            host = [self._buffer(("out", i), o.shape, o.dtype).copy_(o, non_blocking=True)
                    for i, o in enumerate(outputs)]
        self.stream.synchronize()
        return [h.numpy().copy() for h in host]  # the pinned buffers are reused by this worker's next batch

    def _stack(self, arrays: list[np.ndarray], key: tuple) -> torch.Tensor:
        if self.stream is None:
            return torch.from_numpy(np.stack(arrays))
        buffer = self._buffer(key, (len(arrays), *arrays[0].shape), _TORCH_DTYPES[arrays[0].dtype])
        np.stack(arrays, out=buffer.numpy())
        return buffer

    def _buffer(self, key: tuple, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        buffer = self._pinned.get(key)
        if buffer is None or tuple(buffer.shape) != tuple(shape) or buffer.dtype != dtype:
            buffer = self._pinned[key] = torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
        return buffer


class BatchScheduler:
    """Runs each batch once on the first free worker and hands its frames to every request."""

    def __init__(self, workers: list[Worker], batch_size: int) -> None:
        self.batch_size = batch_size
        self._free: queue.Queue[Worker] = queue.Queue()
        for worker in workers:
            self._free.put(worker)
        self._results: OrderedDict[int, Future] = OrderedDict()
        self._delivered: dict[int, int] = {}
        self._capacity = 2 * len(workers) + 2  # batches kept for frames not yet requested
        self._lock = threading.Lock()

    def frame(self, n: int, frames: Sequence[vs.VideoFrame]) -> list[np.ndarray]:
        """Output planes of frame n; `frames` are the members of its batch."""
        batch, member = divmod(n, self.batch_size)
        with self._lock:
            future = self._results.get(batch)
            owner = future is None
            if owner:
                future = self._results[batch] = Future()
                self._evict_unclaimed()
        if owner:
            self._compute(batch, future, frames)
        outputs = future.result()
        self._count_delivery(batch)
        return [plane[member] for plane in outputs]

    def skip(self, n: int) -> None:
        """Frame n was delivered without its batch (a held frame): its batch is released as if it had been."""
        self._count_delivery(n // self.batch_size)

    def _compute(self, batch: int, future: Future, frames: Sequence[vs.VideoFrame]) -> None:
        worker = self._free.get()
        try:
            future.set_result(worker.run(frames))
        except BaseException as exc:
            with self._lock:  # a later request retries instead of reusing the failure
                self._results.pop(batch, None)
            future.set_exception(exc)
        finally:
            self._free.put(worker)

    def _count_delivery(self, batch: int) -> None:
        with self._lock:
            delivered = self._delivered.get(batch, 0) + 1
            if delivered < self.batch_size:
                self._delivered[batch] = delivered
                return
            self._delivered.pop(batch, None)
            self._results.pop(batch, None)

    def _evict_unclaimed(self) -> None:
        """Bound memory when some frames of a batch are never asked for (e.g. vspipe --end)."""
        while len(self._results) > self._capacity:
            oldest, _ = self._results.popitem(last=False)
            self._delivered.pop(oldest, None)
