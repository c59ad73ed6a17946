"""Tiled inference: overlapping tiles blended with linear feathering, so tile borders leave no seams.

Each tile is run with `pad` pixels of context on every side that has a neighbour; neighbouring outputs
overlap by 2 * pad (scaled) and are cross-faded with complementary ramps. The pad/2 pixels next to a cut
edge (the ones that saw padding instead of image) get no weight, so a model whose receptive radius is at
most pad/2 gives exactly the untiled result, and a larger one is still blended without a visible seam.

Tiles are also chosen before the first frame when its activations would not fit in memory (estimated per pixel
on a small probe): transformers' activations grow far beyond their weights on large frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
MEMORY_SHARE = 0.5  # of the free memory that one frame's activations may take


def _spans(length: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) along one axis."""
    spans = []
    for start in range(0, length, tile):
        end = min(start + tile, length)
        spans.append((start, end, max(start - pad, 0), min(end + pad, length)))
    return spans


def _fade(length: int, device: torch.device) -> torch.Tensor:
    """Rising weights over an overlap: 0 in its outer quarter (next to the cut), linear through the middle half,
    1 in its inner quarter. The mirrored fade of the neighbour is exactly 1 minus this one."""
    position = (torch.arange(length, device=device) + 0.5) / length
    return ((position - 0.25) * 2).clamp_(0, 1)


def _axis_weights(size: int, lead: int, trail: int, device: torch.device) -> torch.Tensor:
    """Weights along one axis of a tile's output: fading in over `lead` samples and out over `trail`."""
    weight = torch.ones(size, device=device)
    if lead:
        weight[:lead] = _fade(lead, device)
    if trail:
        weight[size - trail:] = torch.minimum(weight[size - trail:], _fade(trail, device).flip(0))
    return weight


def tiled_forward(forward: Forward, x: torch.Tensor, scale: int, tile: int, pad: int) -> torch.Tensor:
    """Run `forward` over (N,C,H,W) `x` in tiles of `tile` x `tile` pixels with `pad` pixels of context."""
    n, _, height, width = x.shape
    out: torch.Tensor | None = None
    weight_sum = torch.zeros(1, 1, height * scale, width * scale, device=x.device)
    for y0, y1, cy0, cy1 in _spans(height, tile, pad):
        for x0, x1, cx0, cx1 in _spans(width, tile, pad):
            result = forward(x[:, :, cy0:cy1, cx0:cx1]).float()
            if out is None:
                out = torch.zeros(n, result.shape[1], height * scale, width * scale, device=x.device)
            # Fade over the whole overlap with the neighbour: from the context edge to 2*pad inside it.
            wy = _axis_weights(result.shape[2], (min(y0 + pad, height) - cy0) * scale if y0 else 0,
                       (cy1 - max(y1 - pad, 0)) * scale if y1 < height else 0, x.device)
            wx = _axis_weights(result.shape[3], (min(x0 + pad, width) - cx0) * scale if x0 else 0,
                       (cx1 - max(x1 - pad, 0)) * scale if x1 < width else 0, x.device)
            w = wy[:, None] * wx[None, :]
            out[:, :, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] += result * w
            weight_sum[:, :, cy0 * scale:cy1 * scale, cx0 * scale:cx1 * scale] += w
    assert out is not None
    return out / weight_sum


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def activation_bytes_per_pixel(forward: Callable[[torch.Tensor], torch.Tensor], channels: int,
                               device: torch.device, side: int) -> float:
    """Estimated peak activation memory per input pixel: on CUDA measured on a side x side probe; on the CPU
    (no allocator statistics) four times the largest tensor a layer returns, which covers a block's input,
    output, residual and attention scores."""
    probe = torch.rand(1, channels, side, side, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        forward(probe)
        return (torch.cuda.max_memory_allocated(device) - before) / side**2
    largest = 0
    caller = threading.get_ident()

    def hook(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal largest  # the hook is process-wide: other threads' models (web jobs, replicas) do not count
        if isinstance(output, torch.Tensor) and threading.get_ident() == caller:
            largest = max(largest, output.numel() * output.element_size())

    handles = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        forward(probe)
    finally:
        handles.remove()
    return 4 * largest / side**2


def memory_budget(device: torch.device) -> int:
    """Bytes one frame's activations may take: half of what is free on the GPU, or of the available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * MEMORY_SHARE)
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available_kib = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable")))
    except (OSError, StopIteration, ValueError):
        return 2**62  # unknown: never tile for memory
    return int(available_kib * 1024 * MEMORY_SHARE)


def tile_for_budget(bytes_per_pixel: float, budget: int, height: int, width: int,
                    min_tile: int = 32) -> int | None:
    """The square tile side whose activations fit in `budget`, or None when the whole frame fits."""
    if bytes_per_pixel * height * width <= budget:
        return None
    return max(min_tile, int((budget / bytes_per_pixel) ** 0.5))
