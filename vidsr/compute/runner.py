"""Batch runner: host planes -> device -> Upscaler.upscale_planes -> host planes, batches in flight.

Slots, each with its host input buffers and its Upscaler (on the CPU, replicas over the same weights). On
CUDA two slots also have device input and pinned host output buffers: the host-to-device copy runs on a
copy stream, the model on a compute stream and the device-to-host copy on the copy stream again, ordered by
events, so that while batch k computes the CPU packs batch k+1 and unpacks batch k-1. On the CPU two threads
compute two batches at once, so that one fills the cores the other leaves idle (oneDNN's serial moments, a
core taken by the encoder's threads), and the model reads the packed frames and hands out its own output,
without the copies a GPU needs (vspipe with two streams had shown the gain). The two threads split torch's
thread count between them: each taking all of it put twice as many threads as cores into the convolutions,
which then waited on each other's barriers. A third slot holds the next batch ready, so that a thread that
finishes starts on it at once instead of waiting while the calling thread hands out the finished batch and
packs the next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidsr.compute.upscaler import Upscaler
from vidsr.formats import ColorInfo, PlaneLayout

COMPUTE_THREADS = 2  # CPU


def _use_threads(count: int) -> None:
    """Make the calling thread compute with `count` threads. The first call reads torch's process-wide count,
    which a thread otherwise reads at its first parallel operation, undoing this."""
    torch.get_num_threads()
    torch.set_num_threads(count)


@dataclass
class _Slot:
    upscaler: Upscaler
    host_in: list[torch.Tensor]
    items: list[Any] = field(default_factory=list)
    computing: Future | None = None  # CPU: the batch, computing in a thread
    # CUDA only
    device_in: list[torch.Tensor] = field(default_factory=list)
    host_out: list[torch.Tensor] = field(default_factory=list)
    h2d_done: Any = None
    compute_done: Any = None
    d2h_done: Any = None


@dataclass
class Batch:
    """Frames to upscale: one (h, w) array per plane per frame, plus whatever the caller wants back."""

    planes: list[list[np.ndarray]]
    items: list[Any]


class BatchRunner:
    """Upscales batches of planar frames in order, keeping two batches in flight."""

    def __init__(self, upscaler: Upscaler, layout: PlaneLayout, color: ColorInfo, out_layout: PlaneLayout,
                 out_color: ColorInfo, batch_size: int, one_picture: bool = False) -> None:
        """`one_picture`: the input is a single picture, so one compute thread with all of torch's threads (two
        compute threads would leave one of them, and its cores, idle)."""
        self.upscaler = upscaler
        self.one_picture = one_picture
        self.layout, self.color, self.out_layout, self.out_color = layout, color, out_layout, out_color
        self.batch_size = batch_size
        self.device = upscaler.device
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.compute_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._slots: list[_Slot] = []
        self._threads: ThreadPoolExecutor | None = None
        self._caller_threads = 0  # torch's thread count before the compute threads split it

    def _make_slots(self, first: list[np.ndarray]) -> list[_Slot]:
        """The slots, for frames like `first`; on the CPU also their compute threads: two (and three slots),
        unless the model is compiled (dynamo's guards are not made for concurrent calls), two batches would
        not fit in memory or there is one picture (then one thread and two slots)."""
        concurrent = (not self.cuda and not self.upscaler.static_shapes and not self.one_picture
                      and self.upscaler.fits_twice(self.batch_size, *first[0].shape))
        if concurrent:
            self._caller_threads = torch.get_num_threads()
            self._threads = ThreadPoolExecutor(COMPUTE_THREADS, thread_name_prefix="vidsr-model",
                                               initializer=_use_threads,
                                               initargs=(max(1, self._caller_threads // COMPUTE_THREADS),))
        elif not self.cuda:
            self._threads = ThreadPoolExecutor(1, thread_name_prefix="vidsr-model")
        slots = COMPUTE_THREADS + 1 if concurrent else 2
        return [self._make_slot(first, self.upscaler.replica() if concurrent and i else self.upscaler)
                for i in range(slots)]

    def _make_slot(self, first: list[np.ndarray], upscaler: Upscaler) -> _Slot:
        dtype = torch.from_numpy(first[0][:1, :1]).dtype
        host_in = [torch.empty((self.batch_size, *p.shape), dtype=dtype, pin_memory=self.cuda) for p in first]
        slot = _Slot(upscaler, host_in)
        if self.cuda:
            slot.device_in = [torch.empty_like(h, device=self.device) for h in host_in]
            slot.h2d_done, slot.compute_done, slot.d2h_done = (torch.cuda.Event() for _ in range(3))
        return slot

    def _pack(self, slot: _Slot, batch: Batch) -> None:
        for j, frame_planes in enumerate(batch.planes):
            for buffer, plane in zip(slot.host_in, frame_planes, strict=True):
                buffer[j].copy_(torch.from_numpy(plane))
        slot.items = batch.items

    def _compute(self, slot: _Slot, planes: list[torch.Tensor]) -> list[torch.Tensor]:
        # A compiled model gets the whole buffer even for the last, partial batch: one shape, one compile.
        rows = self.batch_size if self.upscaler.static_shapes else len(slot.items)
        return slot.upscaler.upscale_planes([p[:rows] for p in planes], self.layout, self.color, self.out_layout,
                                            self.out_color)

    def _launch(self, slot: _Slot) -> None:
        if self._threads is not None:
            slot.computing = self._threads.submit(self._compute, slot, slot.host_in)
        else:
            self._launch_cuda(slot)

    def _launch_cuda(self, slot: _Slot) -> None:
        n = len(slot.items)
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(slot.compute_done)  # the slot's previous batch has left device_in
            for dev, host in zip(slot.device_in, slot.host_in, strict=True):
                dev[:n].copy_(host[:n], non_blocking=True)
            slot.h2d_done.record()
        with torch.cuda.stream(self.compute_stream):
            self.compute_stream.wait_event(slot.h2d_done)
            out = self._compute(slot, slot.device_in)
            slot.compute_done.record()
        if not slot.host_out:
            slot.host_out = [torch.empty((self.batch_size, *p.shape[1:]), dtype=p.dtype, pin_memory=True)
                             for p in out]
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(slot.compute_done)
            for host, dev in zip(slot.host_out, out, strict=True):
                dev.record_stream(self.copy_stream)  # allocated on the compute stream, read here
                host[:n].copy_(dev[:n], non_blocking=True)
            slot.d2h_done.record()

    def _finish(self, slot: _Slot) -> tuple[list[Any], list[list[np.ndarray]]]:
        if slot.computing is not None:
            out = [plane.contiguous() for plane in slot.computing.result()]
        else:
            slot.d2h_done.synchronize()
            out = slot.host_out
        return slot.items, [[plane[j].numpy() for plane in out] for j in range(len(slot.items))]

    def run(self, batches: Iterable[Batch]) -> Iterator[tuple[list[Any], list[list[np.ndarray]]]]:
        """Yield (items, output planes per frame) for each batch, in order.

        The output arrays may be views into a reused buffer: valid until the next item is requested.
        """
        in_flight: deque[_Slot] = deque()
        try:
            for k, batch in enumerate(batches):
                if not self._slots:
                    self._slots = self._make_slots(batch.planes[0])
                slot = self._slots[k % len(self._slots)]
                if len(in_flight) == len(self._slots):  # the slot is still in use by an earlier batch: hand that out
                    yield self._finish(in_flight.popleft())
                self._pack(slot, batch)
                self._launch(slot)
                in_flight.append(slot)
            while in_flight:
                yield self._finish(in_flight.popleft())
        finally:
            if self._threads is not None:  # a job stopped early waits here for a batch still computing
                self._threads.shutdown(cancel_futures=True)
                self._threads = None
            if self._caller_threads:  # torch's thread count is process-wide: give the caller back its own
                torch.set_num_threads(self._caller_threads)
                self._caller_threads = 0
            self._slots = []  # the next run makes its own, for its frames
