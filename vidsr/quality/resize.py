"""MATLAB-compatible bicubic `imresize` (Keys cubic, a = -0.5, antialiased when shrinking, symmetric borders).

The SR evaluation protocol makes low-resolution images with MATLAB's imresize; torch/OpenCV bicubic differ from it
by up to 0.8 dB, so training, evaluation and the bicubic baseline all use this function. Each pass is a dense
(out x in) weight matrix applied with a matmul, which is exact and fast for image-sized inputs."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x: torch.Tensor) -> torch.Tensor:
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def resize_matrix(in_length: int, out_length: int, scale: float, antialias: bool = True) -> torch.Tensor:
    """(out_length, in_length) float64 matrix M with out = M @ in, as MATLAB's `contributions()` computes it."""
    shrink_aa = antialias and scale < 1
    kernel_width = 4.0 / scale if shrink_aa else 4.0
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if shrink_aa else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric (mirror) padding: index sequence 1..n, n..1 repeated
    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    source = mirror[((indices.long() - 1) % (2 * in_length))]
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights)
    return matrix


def _quantize(x: torch.Tensor, peak: float) -> torch.Tensor:
    """Round to the uint8 grid like MATLAB (halves away from zero; values are non-negative after clamping)."""
    return torch.floor(x.clamp(0, peak) * (255 / peak) + 0.5) * (peak / 255)


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    quantize: bool = False,
    peak: float = 1.0,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize the last two dims (H, W) of a float tensor like MATLAB `imresize(x, scale, 'bicubic')`.

    Give `scale` or the output `size` (h, w). With `quantize`, the result of each pass is rounded to the 8-bit
    grid of values in [0, peak], which is what MATLAB does to uint8 images."""
    in_h, in_w = x.shape[-2:]
    if size is None:
        if scale is None:
            raise ValueError("imresize needs scale or size")
        scale_h = scale_w = float(scale)
        size = (math.ceil(in_h * scale_h), math.ceil(in_w * scale_w))
    else:
        scale_h, scale_w = size[0] / in_h, size[1] / in_w
    work = x.to(torch.float64) if quantize else x
    # MATLAB resizes the dimension with the smaller scale factor first (height first on a tie)
    passes = [(-2, scale_h, size[0], in_h), (-1, scale_w, size[1], in_w)]
    passes.sort(key=lambda p: p[1])
    for dim, dim_scale, out_len, in_len in passes:
        matrix = resize_matrix(in_len, out_len, dim_scale, antialias).to(work.device, work.dtype)
        work = torch.matmul(matrix, work) if dim == -2 else torch.matmul(work, matrix.T)
        if quantize:
            work = _quantize(work, peak)
    return work.to(x.dtype)


def imresize_np(img: np.ndarray, scale: float | None = None, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """`imresize` for an HxW or HxWxC numpy image; uint8 images are rounded after each pass, as MATLAB does."""
    is_uint8 = img.dtype == np.uint8
    tensor = torch.from_numpy(np.array(img, dtype=np.float64))
    chw = tensor.permute(2, 0, 1) if img.ndim == 3 else tensor
    out = imresize(chw, scale, size=size, quantize=is_uint8, peak=255.0)
    out = out.permute(1, 2, 0) if img.ndim == 3 else out
    return out.numpy().astype(np.uint8) if is_uint8 else out.numpy().astype(img.dtype)
