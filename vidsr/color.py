"""Colour conversion as tensor ops: integer planes <-> normalised Y'CbCr <-> RGB, on any device.

Levels follow the stream's range (limited: 16-235/240 scaled to the bit depth; full: 0..2^b-1), the matrix
its H.273 code (BT.601, BT.709, BT.2020 non-constant luminance). Chroma is resampled with a Keys cubic
kernel that honours the stream's chroma siting (MPEG-2 'left' unless tagged otherwise, e.g. BT.2020's
'top-left') and antialiases when it shrinks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from vidsr.formats import ColorInfo, PlaneLayout

# (Kr, Kb) per H.273 matrix code.
_LUMA_COEFFS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
                9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
BT601 = 6


def luma_coefficients(matrix: int) -> tuple[float, float]:
    return _LUMA_COEFFS.get(matrix, _LUMA_COEFFS[BT601])


# --- levels -----------------------------------------------------------------------------------------------

def _level_scale(bit_depth: int, full_range: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma span, chroma offset, chroma span) in code values of the given depth."""
    if full_range:
        peak = float((1 << bit_depth) - 1)
        return 0.0, peak, float(1 << (bit_depth - 1)), peak
    unit = float(1 << (bit_depth - 8))
    return 16 * unit, 219 * unit, 128 * unit, 224 * unit


def decode_luma(y: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    """Integer luma codes -> Y' in [0, 1] (nominal range)."""
    offset, span, _, _ = _level_scale(bit_depth, full_range)
    return (y.float() - offset) / span


def decode_chroma(c: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    """Integer chroma codes -> Cb/Cr in [-0.5, 0.5]."""
    _, _, offset, span = _level_scale(bit_depth, full_range)
    return (c.float() - offset) / span


def _quantise(x: torch.Tensor, bit_depth: int) -> torch.Tensor:
    codes = x.round().clamp_(0, (1 << bit_depth) - 1)
    return codes.to(torch.uint8 if bit_depth <= 8 else torch.int32).to(torch.uint8 if bit_depth <= 8 else torch.uint16)


def decode_alpha(a: torch.Tensor, bit_depth: int) -> torch.Tensor:
    """Integer alpha codes -> opacity in [0, 1] (alpha is always full range)."""
    return a.float() / ((1 << bit_depth) - 1)


def encode_alpha(a: torch.Tensor, bit_depth: int) -> torch.Tensor:
    return _quantise(a * ((1 << bit_depth) - 1), bit_depth)


def encode_luma(y: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    offset, span, _, _ = _level_scale(bit_depth, full_range)
    return _quantise(y * span + offset, bit_depth)


def encode_chroma(c: torch.Tensor, bit_depth: int, full_range: bool) -> torch.Tensor:
    _, _, offset, span = _level_scale(bit_depth, full_range)
    return _quantise(c * span + offset, bit_depth)


# Y-channel models use the SR papers' convention: BT.601 studio-range luma divided by 255.
def luma_to_model(y: torch.Tensor) -> torch.Tensor:
    return (16.0 + 219.0 * y) / 255.0


def luma_from_model(y: torch.Tensor) -> torch.Tensor:
    return (255.0 * y - 16.0) / 219.0


# --- matrix -----------------------------------------------------------------------------------------------

def ycc_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, matrix: int) -> torch.Tensor:
    """(N,H,W) Y' [0,1], Cb/Cr [-0.5,0.5] -> (N,3,H,W) R'G'B' [0,1] (not clamped)."""
    kr, kb = luma_coefficients(matrix)
    kg = 1.0 - kr - kb
    r = y + 2.0 * (1.0 - kr) * cr
    b = y + 2.0 * (1.0 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    return torch.stack((r, g, b), dim=1)


def rgb_to_ycc(rgb: torch.Tensor, matrix: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,3,H,W) R'G'B' -> Y' [0,1], Cb, Cr [-0.5,0.5], each (N,H,W)."""
    kr, kb = luma_coefficients(matrix)
    r, g, b = rgb.unbind(1)
    y = kr * r + (1.0 - kr - kb) * g + kb * b
    return y, (b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr))


# --- sited cubic resampling ---------------------------------------------------------------------------------

def _keys_cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    near = (1.5 * ax - 2.5) * ax * ax + 1.0
    far = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return torch.where(ax <= 1, near, torch.where(ax < 2, far, torch.zeros_like(ax)))


@dataclass(frozen=True)
class _AxisKernel:
    """One axis of a resampling as a strided 1-D convolution with one output channel per phase.

    For integer scales the mapping is periodic: `phases` consecutive outputs use fixed weights and the next
    `phases` outputs the same weights `stride` input samples further on. So the whole axis is a conv1d
    over the replicate-padded input, its channels interleaved back into one line.
    """

    weight: torch.Tensor  # (phases, 1, taps)
    stride: int
    offset: int  # input index of the first kernel tap for output 0 (may be negative: replicate padding)
    phases: int

    def apply(self, x: torch.Tensor, n_out: int, axis: int) -> torch.Tensor:
        """Resample axis -1 (width) or -2 (height) of (..., H, W) `x` to `n_out` samples.

        Runs as a conv2d with a (1, taps) or (taps, 1) kernel: several times faster on the CPU than conv1d
        over rows, and no transposes.
        """
        lead, (height, width) = x.shape[:-2], x.shape[-2:]
        along_width = axis == -1
        n_in = width if along_width else height
        blocks = -(-n_out // self.phases)
        needed = (blocks - 1) * self.stride + self.weight.shape[-1]
        pad_left = max(0, -self.offset)
        pad_right = max(0, self.offset + needed - n_in)
        image = F.pad(x.reshape(-1, 1, height, width),
                      (pad_left, pad_right, 0, 0) if along_width else (0, 0, pad_left, pad_right), mode="replicate")
        start = self.offset + pad_left
        weight = self.weight.to(x.dtype)
        if along_width:
            out = F.conv2d(image[..., start:start + needed], weight.unsqueeze(2), stride=(1, self.stride))
            out = out.permute(0, 2, 3, 1).reshape(-1, height, blocks * self.phases)[..., :n_out]
        else:
            out = F.conv2d(image[..., start:start + needed, :], weight.unsqueeze(3), stride=(self.stride, 1))
            out = out.permute(0, 2, 1, 3).reshape(-1, blocks * self.phases, width)[:, :n_out]
        return out.reshape(*lead, *out.shape[-2:])


@lru_cache(maxsize=64)
def _axis_kernel(step_in: int, step_out: int, scale: int, centred: bool, device: str) -> _AxisKernel:
    """The kernel mapping one axis of a plane grid onto another.

    A plane subsampled by `step` stores sample i at luma position step*i (+ (step-1)/2 when centred); the
    output luma grid is the input's scaled by `scale` with pixel centres aligned.
    """
    common = math.gcd(step_out, scale * step_in)
    phases, stride = scale * step_in // common, step_out // common
    offset_in = (step_in - 1) / 2 if centred else 0.0
    offset_out = (step_out - 1) / 2 if centred else 0.0
    out_luma = torch.arange(phases, dtype=torch.float64) * step_out + offset_out
    u = ((out_luma + 0.5) / scale - 0.5 - offset_in) / step_in  # fractional input index of each phase
    stretch = max(1.0, step_out / (scale * step_in))  # > 1 when shrinking: widen the kernel to antialias
    taps = 2 * math.ceil(2 * stretch)
    first = torch.floor(u - 2 * stretch).long() + 1
    index = first[:, None] + torch.arange(taps)[None, :]
    weight = _keys_cubic((index - u[:, None]) / stretch)
    weight = weight / weight.sum(dim=1, keepdim=True)
    start = int(first.min())
    kernel = torch.zeros(phases, 1, taps + int(first.max()) - start, dtype=torch.float64)
    for phase in range(phases):
        shift = int(first[phase]) - start
        kernel[phase, 0, shift:shift + taps] = weight[phase]
    return _AxisKernel(kernel.float().to(device), stride, start, phases)


def resample_plane(x: torch.Tensor, out_height: int, out_width: int, log2_in: tuple[int, int],
                   log2_out: tuple[int, int], scale: int, siting: tuple[bool, bool] = (False, True)) -> torch.Tensor:
    """Resample (N,h,w) float plane samples onto another plane grid (chroma <-> luma, and/or scaled).

    `log2_in` / `log2_out` are the (horizontal, vertical) subsampling exponents of the two grids and
    `siting` says whether subsampled samples sit centred between luma samples on each axis.
    """
    device = str(x.device)
    along_w = _axis_kernel(1 << log2_in[0], 1 << log2_out[0], scale, siting[0], device)
    along_h = _axis_kernel(1 << log2_in[1], 1 << log2_out[1], scale, siting[1], device)
    return along_h.apply(along_w.apply(x, out_width, axis=-1), out_height, axis=-2)


# --- whole frames -------------------------------------------------------------------------------------------

def chroma_size(width: int, height: int, layout: PlaneLayout) -> tuple[int, int]:
    """(height, width) of a chroma plane, rounding up like FFmpeg."""
    return -(-height >> layout.log2_chroma_h), -(-width >> layout.log2_chroma_w)


def planes_to_rgb(planes: list[torch.Tensor], layout: PlaneLayout, color: ColorInfo) -> torch.Tensor:
    """Integer planes, each (N,h,w) -> (N,3,H,W) float RGB in [0,1] (clamped)."""
    depth, full = layout.bit_depth, color.full_range
    if layout.is_rgb:
        peak = float((1 << depth) - 1)
        return torch.stack([p.float() / peak for p in planes], dim=1)
    y = decode_luma(planes[0], depth, full)
    if layout.is_gray:
        return y.clamp(0, 1).unsqueeze(1).expand(-1, 3, -1, -1)
    height, width = y.shape[-2:]
    sub = (layout.log2_chroma_w, layout.log2_chroma_h)
    cb, cr = (resample_plane(decode_chroma(c, depth, full), height, width, sub, (0, 0), 1, color.chroma_siting)
              for c in planes[1:])
    return ycc_to_rgb(y, cb, cr, color.resolved_matrix(height)).clamp_(0, 1)


def rgb_to_planes(rgb: torch.Tensor, layout: PlaneLayout, color: ColorInfo) -> list[torch.Tensor]:
    """(N,3,H,W) float RGB -> integer planes of `layout` (chroma downsampled with antialiasing)."""
    depth, full = layout.bit_depth, color.full_range
    if layout.is_rgb:
        peak = float((1 << depth) - 1)
        return [_quantise(c * peak, depth) for c in rgb.unbind(1)]
    height, width = rgb.shape[-2:]
    y, cb, cr = rgb_to_ycc(rgb, color.resolved_matrix(height))
    if layout.is_gray:
        return [encode_luma(y, depth, full)]
    c_height, c_width = chroma_size(width, height, layout)
    sub = (layout.log2_chroma_w, layout.log2_chroma_h)
    return [encode_luma(y, depth, full)] + [
        encode_chroma(resample_plane(c, c_height, c_width, (0, 0), sub, 1, color.chroma_siting), depth, full)
        for c in (cb, cr)
    ]
