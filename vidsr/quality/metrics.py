"""PSNR and SSIM on BT.601 luma, the standard SR evaluation protocol (values on the 0-255 scale), and the
overshoot next to edges that shows haloes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Y = 16 + 65.481 R + 128.553 G + 24.966 B, with R, G, B in [0, 1]  (MATLAB rgb2ycbcr)
Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 RGB on the 0-255 scale (uint8, or float 0..255, not 0..1) -> HxW float64 luma on the 0-255 scale
    (16..235), not rounded: this reproduces the published bicubic baselines within 0.015 dB (rounding to uint8
    first gives 0.02 dB less on Set5 x2)."""
    r, g, b = (rgb[..., i].astype(np.float64) / 255 for i in range(3))
    return 16 + Y_WEIGHTS[0] * r + Y_WEIGHTS[1] * g + Y_WEIGHTS[2] * b


def rgb_to_y_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) luma in [16/255, 235/255] (the Y models' input range)."""
    weights = torch.tensor(Y_WEIGHTS, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1) / 255
    return 16 / 255 + (rgb * weights).sum(dim=1, keepdim=True)


def shave(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """PSNR in dB of two images on the 0-255 scale, `border` pixels shaved from each side."""
    diff = shave(a.astype(np.float64), border) - shave(b.astype(np.float64), border)
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, valid region) of two
    single-channel images on the 0-255 scale, `border` pixels shaved from each side."""
    x = torch.from_numpy(shave(a.astype(np.float64), border))[None, None]
    y = torch.from_numpy(shave(b.astype(np.float64), border))[None, None]
    window = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x**2
    var_y = F.conv2d(y * y, window) - mu_y**2
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


EDGE_STEP = 32  # 8-bit levels across two pixels: an edge strong enough for a halo to show along it
HALO_REACH = 4  # pixels on each side of such an edge that are checked
# The ground truth's local range: its min and max over this square, wide enough to hold both sides of an edge
# that a blur spreads over a few pixels, so that only going beyond both sides counts.
RANGE_WINDOW = 2 * HALO_REACH + 1


def overshoot(truth: np.ndarray, output: np.ndarray, border: int = 0) -> float:
    """Haloes and ringing, in 8-bit levels: how far `output` leaves the local range of `truth` (the min and max
    of a 9x9 window), averaged over the pixels within 4 of `truth`'s strong edges. A halo (a bright rim along
    a dark edge) goes beyond anything in the ground truth there; an edge that is sharp, blurred or a few pixels
    off does not. Both are luma on the 0-255 scale; `border` pixels are shaved."""
    t = torch.from_numpy(shave(truth.astype(np.float64), border))[None, None]
    o = torch.from_numpy(shave(output.astype(np.float64), border))[None, None]
    pad = RANGE_WINDOW // 2
    upper = F.max_pool2d(F.pad(t, (pad,) * 4, mode="replicate"), RANGE_WINDOW, stride=1)
    lower = -F.max_pool2d(F.pad(-t, (pad,) * 4, mode="replicate"), RANGE_WINDOW, stride=1)
    padded = F.pad(t, (1, 1, 1, 1), mode="replicate")
    step = torch.maximum((padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]).abs(),
                         (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]).abs())
    near_edge = F.max_pool2d((step >= EDGE_STEP).double(), 2 * HALO_REACH + 1, stride=1, padding=HALO_REACH) > 0
    if not near_edge.any():
        return float("nan")  # nothing to measure: averaged as missing, not as no halo
    beyond = (o - upper).clamp(min=0) + (lower - o).clamp(min=0)
    return float(beyond[near_edge].mean())
