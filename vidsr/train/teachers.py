"""Distillation teachers: any loadable model (a bundled name, a weight file, an ncnn graph, Real-ESRGAN's official
models) whose output on a student's input is the student's target.

A teacher of another scale than the student's is resampled to it with MATLAB's antialiased bicubic, as
Real-ESRGAN's `--outscale` resizes its x4 output: one x4 teacher serves x2 and x4 students. The input is mirrored
by a few pixels around the patch before the teacher sees it, so that the teacher's own zero padding does not
mark the rim of the target the student learns.

On a CPU with bf16 in hardware (AVX512-BF16 / AMX) the teacher runs under bf16 autocast: x4plus 4x faster, its
output 52 dB from fp32's (below the 8-bit rounding of the stored targets). The precision is part of the
fingerprint, so a pool made in one precision is never taken for the other's.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from vidsr.compute.upscaler import cpu_has_native_bf16
from vidsr.models.archs import ModelDescriptor
from vidsr.models.zoo import load_model, model_source_files
from vidsr.quality.resize import imresize
from vidsr.train.degradations import filter2d

MARGIN = 4  # input pixels mirrored around a patch
TONE_SIGMA = 2.0  # input pixels: the scale below which `input_tone` leaves the teacher's picture alone


@lru_cache(maxsize=2)
def load_teacher(name: str) -> ModelDescriptor:
    """A teacher loaded once per process, ready for inference on the CPU or where the caller moves it."""
    descriptor = load_model(name)
    descriptor.model.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    return descriptor


def fingerprint(name: str) -> str:
    """A digest of the teacher's files: its weights, not only its name, decide its output."""
    digest = hashlib.sha1(b"bf16" if teacher_in_bf16() else b"")
    for path in model_source_files(name):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def teacher_in_bf16() -> bool:
    """Whether teachers run under bf16 autocast here: on CPUs that compute bf16 in hardware."""
    return cpu_has_native_bf16()


@torch.no_grad()
def teacher_output(teacher: ModelDescriptor, lr: torch.Tensor, scale: int,
                   network: torch.nn.Module | None = None) -> torch.Tensor:
    """The teacher's output on float LR patches (N, C, h, w), as (N, C, h * scale, w * scale) (not clamped).
    `network` is the teacher's module where the caller keeps a moved or laid-out copy of it."""
    margin = min(MARGIN, lr.shape[-1] - 1, lr.shape[-2] - 1)
    x = F.pad(lr, (margin,) * 4, mode="reflect").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=teacher_in_bf16() and x.device.type == "cpu"):
        y = teacher.run(x, network).float()
    edge = margin * teacher.scale
    y = y[..., edge : y.shape[-2] - edge, edge : y.shape[-1] - edge]
    if teacher.scale != scale:
        y = imresize(y, scale / teacher.scale)
    return y


def input_tone(target: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """`target` (N, C, H, W) with its local tone (a Gaussian low-pass of TONE_SIGMA input pixels) replaced by
    that of the input `lr` upscaled: the teacher's detail and texture, the input's brightness and colour.
    Real-ESRGAN's x4plus darkens degraded input by about 2 levels; a student should not learn that."""
    upscaled = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)
    return target + _low_pass(upscaled, TONE_SIGMA * scale) - _low_pass(target, TONE_SIGMA * scale)


def _low_pass(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of (N, C, H, W) images, mirrored at the borders (`degradations.filter2d`)."""
    radius = int(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    flat = images.reshape(-1, *images.shape[-2:])
    return filter2d(filter2d(flat, taps[None]), taps[:, None]).reshape(images.shape)
