"""Batch runner: host planes -> device -> Upscaler.upscale_planes -> host planes, double-buffered.

Two slots, each with host input/output buffers (pinned on CUDA) and device input buffers. On CUDA the
host-to-device copy runs on a copy stream, the model on a compute stream and the device-to-host copy on
the copy stream again, ordered by events, so that while batch k computes the CPU packs batch k+1 and
unpacks batch k-1. On the CPU the same schedule runs with synchronous no-op streams, which keeps one code
path (and lets the CPU tests exercise the scheduling).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vidsr.formats import ColorInfo, PlaneLayout
from vidsr.upscaler import Upscaler

SLOTS = 2


class _NoOpEvent:
    def record(self, stream: Any = None) -> None: ...
    def synchronize(self) -> None: ...


class _DeviceKit:
    """Streams, events and host memory for a device; synchronous stand-ins on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        self.compute_stream = torch.cuda.Stream(device) if self.cuda else None

    def event(self) -> torch.cuda.Event | _NoOpEvent:
        return torch.cuda.Event() if self.cuda else _NoOpEvent()

    def on(self, stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def wait(self, stream: torch.cuda.Stream | None, event: torch.cuda.Event | _NoOpEvent) -> None:
        if stream is not None:
            stream.wait_event(event)

    def host(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=self.cuda)

    def device_buffer(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)


@dataclass
class _Slot:
    host_in: list[torch.Tensor]
    device_in: list[torch.Tensor]
    h2d_done: Any
    compute_done: Any
    d2h_done: Any
    host_out: list[torch.Tensor] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)


@dataclass
class Batch:
    """Frames to upscale: one (h, w) array per plane per frame, plus whatever the caller wants back."""

    planes: list[list[np.ndarray]]
    items: list[Any]


class BatchRunner:
    """Upscales batches of planar frames in order, keeping two batches in flight."""

    def __init__(self, upscaler: Upscaler, layout: PlaneLayout, color: ColorInfo, out_layout: PlaneLayout,
                 out_color: ColorInfo, batch_size: int) -> None:
        self.upscaler = upscaler
        self.layout, self.color, self.out_layout, self.out_color = layout, color, out_layout, out_color
        self.batch_size = batch_size
        self.kit = _DeviceKit(upscaler.device)
        self._slots: list[_Slot] = []

    def _make_slot(self, first: list[np.ndarray]) -> _Slot:
        kit, n = self.kit, self.batch_size
        dtype = torch.from_numpy(first[0][:1, :1]).dtype
        return _Slot(
            host_in=[kit.host((n, *p.shape), dtype) for p in first],
            device_in=[kit.device_buffer((n, *p.shape), dtype) for p in first],
            h2d_done=kit.event(), compute_done=kit.event(), d2h_done=kit.event(),
        )

    def _pack(self, slot: _Slot, batch: Batch) -> None:
        for j, frame_planes in enumerate(batch.planes):
            for buffer, plane in zip(slot.host_in, frame_planes, strict=True):
                buffer[j].copy_(torch.from_numpy(plane))
        slot.items = batch.items

    def _launch(self, slot: _Slot) -> None:
        kit, n = self.kit, len(slot.items)
        with kit.on(kit.copy_stream):
            kit.wait(kit.copy_stream, slot.compute_done)  # the slot's previous batch has left device_in
            for dev, host in zip(slot.device_in, slot.host_in, strict=True):
                dev[:n].copy_(host[:n], non_blocking=True)
            slot.h2d_done.record()
        with kit.on(kit.compute_stream):
            kit.wait(kit.compute_stream, slot.h2d_done)
            # A compiled model gets the whole buffer even for the last, partial batch: one shape, one compile.
            rows = self.batch_size if self.upscaler.static_shapes else n
            out = self.upscaler.upscale_planes([d[:rows] for d in slot.device_in], self.layout, self.color,
                                               self.out_layout, self.out_color)
            slot.compute_done.record()
        if not slot.host_out:
            slot.host_out = [kit.host((self.batch_size, *p.shape[1:]), p.dtype) for p in out]
        with kit.on(kit.copy_stream):
            kit.wait(kit.copy_stream, slot.compute_done)
            for host, dev in zip(slot.host_out, out, strict=True):
                if kit.copy_stream is not None:
                    dev.record_stream(kit.copy_stream)  # allocated on the compute stream, read here
                host[:n].copy_(dev[:n], non_blocking=True)
            slot.d2h_done.record()

    def _finish(self, slot: _Slot) -> tuple[list[Any], list[list[np.ndarray]]]:
        slot.d2h_done.synchronize()
        planes = [[buffer[j].numpy() for buffer in slot.host_out] for j in range(len(slot.items))]
        return slot.items, planes

    def run(self, batches: Iterable[Batch]) -> Iterator[tuple[list[Any], list[list[np.ndarray]]]]:
        """Yield (items, output planes per frame) for each batch, in order.

        The output arrays are views into a reused buffer: valid until the next item is requested.
        """
        in_flight: deque[_Slot] = deque()
        for k, batch in enumerate(batches):
            if not self._slots:
                self._slots = [self._make_slot(batch.planes[0]) for _ in range(SLOTS)]
            slot = self._slots[k % SLOTS]
            if len(in_flight) == SLOTS:  # the slot is still in use by batch k-2: hand that one out first
                yield self._finish(in_flight.popleft())
            self._pack(slot, batch)
            self._launch(slot)
            in_flight.append(slot)
        while in_flight:
            yield self._finish(in_flight.popleft())
