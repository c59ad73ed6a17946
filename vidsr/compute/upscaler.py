"""Upscaler: one model on one device at one precision, for tensors, numpy images and decoded YUV planes.

Every frontend (CLI, VapourSynth, web) runs models through this class, so device placement, precision,
padding to the model's size multiple, tiling and out-of-memory recovery live here once.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vidsr import color as colorops
from vidsr.compute import heap
from vidsr.compute.fusion import fuse_conv_activations
from vidsr.compute.tiling import (
    MEMORY_SHARE,
    activation_bytes_per_pixel,
    is_out_of_memory,
    memory_budget,
    tile_for_budget,
    tiled_forward,
)
from vidsr.errors import POSITIVE, InputError, VidsrError
from vidsr.formats import ColorInfo, PlaneLayout
from vidsr.models.archs import ModelDescriptor
from vidsr.models.chain import ModelSpec, load_models
from vidsr.models.zoo import DEFAULT_MODEL

log = logging.getLogger("vidsr")

Precision = Literal["auto", "fp32", "fp16", "bf16"]
BatchSize = int | Literal["auto"] | None  # frames per model call; None: the device's default; auto: fit memory
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_TILE = 32
# Frames per model call by default. On the CPU larger batches buy nothing (ESPCN x2 at 640x360, bf16, 2 cores:
# 36.4 ms a frame at 1, 36.1 at 4, bench/cpu_fusion.py) while holding more memory and latency, and the runner's
# two compute threads already keep the cores busy.
CPU_BATCH = 1
CUDA_BATCH = 4
AUTO_BATCH_LIMIT = 16  # past this, larger batches stopped paying on the GPU while latency and memory still grow
AUTO_BATCH_HEADROOM = 0.5  # share of the free memory one batch may take: two are in flight, plus fragmentation
# Every frame of a video has one shape, so cuDNN's per-shape algorithm search (milliseconds, once) pays off.
CUDNN_AUTOTUNE = True


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks the current CUDA GPU when there is one, else the CPU; 'cuda:N' must exist. A CUDA device
    always comes back with its index (per-device calls such as the memory cap refuse a bare 'cuda')."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise VidsrError(f"unknown device {device!r} (use auto, cpu or cuda:N)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise VidsrError(f"device {device} requested but no CUDA GPU is available")
        if resolved.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if resolved.index >= torch.cuda.device_count():
            raise VidsrError(f"device {device} does not exist ({torch.cuda.device_count()} CUDA GPU(s) found)")
    elif resolved.type != "cpu":
        raise VidsrError(f"unsupported device {device!r} (use auto, cpu or cuda:N)")
    return resolved


@lru_cache(maxsize=1)
def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 convolutions run ~1.9x
    faster than fp32 (ESPCN x2: 36.161 -> 36.144 dB on Set5)."""
    return "avx512_bf16" in _cpu_flags() or "amx_bf16" in _cpu_flags()


def cpu_runs_bf16() -> bool:
    """Whether oneDNN has bf16 convolutions for this CPU at all: in hardware, or emulated with AVX-512 (BW, VL,
    DQ) or AVX-NE-CONVERT. On an AVX2-only CPU torch's bf16 convolution fails outright."""
    flags = _cpu_flags()
    avx512 = all(f" {flag}" in flags for flag in ("avx512bw", "avx512vl", "avx512dq"))
    return cpu_has_native_bf16() or "avx_ne_convert" in flags or avx512


def cpu_has_native_fp16() -> bool:
    """Whether the CPU computes fp16 in hardware (AVX512-FP16 or AMX-FP16); elsewhere PyTorch emulates it,
    many times slower than fp32 and with no gain in quality."""
    return "avx512_fp16" in _cpu_flags() or "amx_fp16" in _cpu_flags()


def compiled(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """`torch.compile`, and on the CPU with inductor's freezing: the weights become constants, so inductor
    can hand the convolutions to oneDNN with their activations fused (2x for ESPCN in bf16 on AVX-512, where
    eager bf16 tanh costs more than the convolutions). Freezing is patched in around each call, where the
    compilation of a new shape happens, instead of being set for the whole process."""
    if device.type != "cpu":
        return torch.compile(model)
    import torch._inductor.config as inductor_config  # imported only when compiling: it is slow to import
    from torch._inductor import cpp_builder
    from torch._inductor.exc import InvalidCxxCompiler

    try:  # here, not as a traceback from inside the first frame
        cpp_builder.get_cpp_compiler()
    except InvalidCxxCompiler:
        raise VidsrError("compiling for the CPU needs a C++ compiler (g++, or $CXX): install one, or run "
                         "without compile") from None
    # A graph per input shape: inductor's frozen oneDNN convolutions get strides wrong with dynamic shapes
    # (torch 2.14), and a video has one frame shape anyway.
    compiled_model = torch.compile(model, dynamic=False)

    def frozen(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled_model(x)

    return frozen


def resolve_precision(precision: Precision, device: torch.device, descriptor: ModelDescriptor) -> torch.dtype:
    """'auto' is fp16 on CUDA, bf16 on CPUs with native bf16, fp32 otherwise, or where the model does not
    support the half precision the device would use (said in a notice)."""
    if precision == "auto":
        half = "fp16" if device.type == "cuda" else "bf16" if cpu_has_native_bf16() else None
        if half is None:
            return torch.float32
        if half in descriptor.precisions:
            return _DTYPES[half]
        log.warning("%s does not support %s: running in fp32", descriptor.arch, half)
        return torch.float32
    if precision not in _DTYPES:
        raise VidsrError(f"unknown precision {precision!r} (use auto, fp32, fp16 or bf16)")
    if precision == "fp16" and not descriptor.supports_fp16:
        raise VidsrError(f"model {descriptor.arch} does not support fp16")
    if precision == "fp16" and device.type == "cpu" and not cpu_has_native_fp16():
        raise VidsrError("this CPU has no native fp16 arithmetic (AVX512-FP16 or AMX-FP16); use fp32"
                         + " or bf16" * cpu_runs_bf16())
    if precision == "bf16" and not descriptor.supports_bf16:
        raise VidsrError(f"model {descriptor.arch} does not support bf16")
    if precision == "bf16" and device.type == "cpu" and not cpu_runs_bf16():
        raise VidsrError("this CPU has no bf16 convolutions (they need AVX-512 or AVX-NE-CONVERT); use fp32")
    return _DTYPES[precision]


def batch_for_memory(per_frame: int, free: int) -> int:
    """How many frames of `per_frame` bytes a batch may hold in `free` bytes (at least 1, at most the limit)."""
    return max(1, min(AUTO_BATCH_LIMIT, int(free * AUTO_BATCH_HEADROOM) // max(per_frame, 1)))


class Upscaler:
    """Runs a super-resolution model; thread-safe (one forward pass at a time per instance).

    Args:
        model: bundled model name, weight file path, or a loaded ModelDescriptor; or a list of them (or
            "A,B"), run as a chain (vidsr.models.chain).
        device: "auto", "cpu" or "cuda:N".
        precision: "auto" (fp16 on CUDA, bf16 on CPUs with native bf16, where the model supports it), "fp32",
            "fp16" or "bf16".
        tile: tile size in input pixels, or None to run whole frames (and tile automatically on CUDA
            out-of-memory, halving until it fits).
        tile_pad: context pixels around each tile; tiles are cross-faded over this overlap.
        max_memory: cap on this process's CUDA memory in GiB (tiles shrink to stay inside it).
        compile: run the model through `torch.compile` (slow first batch, then faster; inductor's cache
            makes later runs start quicker). Pays off for long videos. On the CPU it needs a C++ compiler.
    """

    def __init__(self, model: ModelSpec | Sequence[ModelSpec] = DEFAULT_MODEL, device: str | torch.device = "auto",
                 precision: Precision = "auto", tile: int | None = None, tile_pad: int = 16,
                 max_memory: float | None = None, compile: bool = False, strength: float | None = None) -> None:
        heap.keep_large_allocations()  # per-batch activations reuse warm pages instead of faulting in anew
        self.descriptor = load_models(model, strength)
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, self.descriptor)
        for name, value in (("tile", tile), ("tile_pad", tile_pad)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise VidsrError(f"{name} must be a whole number of pixels (got {value!r})")
        if tile is not None and tile < MIN_TILE:
            raise VidsrError(f"tile must be at least {MIN_TILE} pixels (got {tile})")
        if tile_pad < 0:
            raise VidsrError(f"tile_pad must be at least 0 (got {tile_pad}); tiles without overlap show seams")
        self.tile = None if tile is None else self._fit_tile(tile)
        self.tile_pad = tile_pad
        if self.device.type == "cuda" and CUDNN_AUTOTUNE:
            torch.backends.cudnn.benchmark = True
        # channels_last suits cuDNN and oneDNN alike (1.5x for ESPCN on an AVX-512 CPU).
        model = self.descriptor.model.eval().to(self.device, self.dtype, memory_format=torch.channels_last)
        if self.device.type == "cpu" and not compile:  # inductor fuses by itself
            fuse_conv_activations(model, lambda x: self.descriptor.run(x, model), self._probe())
        self.model = compiled(model, self.device) if compile else model
        self.static_shapes = compile  # a compiled model re-compiles for every new input shape
        self._lock = threading.RLock()
        self._activation_bytes_per_pixel: float | None = None
        self._keeps_weights: bool | None = None  # whether threads may share the model (see replica)
        self.memory_cap: int | None = None  # bytes, on CUDA with max_memory
        if max_memory is not None:
            self._cap_memory(POSITIVE.check("max_memory", max_memory))

    def replica(self) -> Upscaler:
        """An Upscaler over the same loaded model (weights shared, not copied) with a lock of its own, so that
        two threads can run forward passes at the same time. A model whose forward pass writes its own weights
        gets a copy of its own instead: the other thread would read them half-written."""
        twin = copy.copy(self)
        twin._lock = threading.RLock()
        if not self._forward_keeps_weights():
            twin.model = copy.deepcopy(self.model)
        return twin

    def _forward_keeps_weights(self) -> bool:
        """Whether a forward pass leaves every parameter and buffer as it was (same tensor, storage and version),
        checked once on a probe."""
        if self._keeps_weights is None:
            def state() -> list[tuple[int, int, int]]:
                tensors = itertools.chain(self.descriptor.model.parameters(), self.descriptor.model.buffers())
                return [(id(tensor), tensor.data_ptr(), tensor._version) for tensor in tensors]

            with self._lock, torch.inference_mode():
                before = state()
                self._forward(self._probe())
                self._keeps_weights = before == state()
        return self._keeps_weights

    def fits_twice(self, frames: int, height: int, width: int) -> bool:
        """Whether two batches of `frames` frames of height x width (model input) can compute at once within
        the memory budget; tiled runs hold one tile at a time."""
        if self.tile is not None:
            height, width = min(height, self.tile + 2 * self.tile_pad), min(width, self.tile + 2 * self.tile_pad)
        with self._lock, torch.inference_mode():
            return 2 * frames * height * width * self._bytes_per_pixel() <= self._memory_budget()

    def _bytes_per_pixel(self) -> float:
        """The model's activation memory per input pixel, measured once on a small probe."""
        if self._activation_bytes_per_pixel is None:
            self._activation_bytes_per_pixel = activation_bytes_per_pixel(
                self._forward, self.descriptor.run_channels, self.device, self._fit_tile(MIN_TILE))
        return self._activation_bytes_per_pixel

    def _memory_budget(self) -> int:
        """Bytes a batch's activations may take: a share of the free memory, and of what `max_memory` leaves."""
        budget = memory_budget(self.device)
        if self.memory_cap is not None:
            left = self.memory_cap - torch.cuda.memory_allocated(self.device)
            budget = min(budget, int(max(left, 0) * MEMORY_SHARE))
        return budget

    def _cap_memory(self, gib: float) -> None:
        if self.device.type != "cuda":
            return  # host memory is not capped: CPU inference does not run out the way a GPU does
        total = torch.cuda.get_device_properties(self.device).total_memory
        self.memory_cap = min(total, int(gib * 2**30))
        torch.cuda.set_per_process_memory_fraction(self.memory_cap / total, self.device)

    def batch_size(self, requested: BatchSize, layout: PlaneLayout, color: ColorInfo, width: int, height: int,
                   out_layout: PlaneLayout | None = None, out_color: ColorInfo | None = None) -> int:
        """Frames per model call: `requested`; for None the device's default; for "auto" `auto_batch_size`."""
        if requested is None:
            return CUDA_BATCH if self.device.type == "cuda" else CPU_BATCH
        if requested == "auto":
            return self.auto_batch_size(layout, color, width, height, out_layout, out_color)
        return requested

    def auto_batch_size(self, layout: PlaneLayout, color: ColorInfo, width: int, height: int,
                        out_layout: PlaneLayout | None = None, out_color: ColorInfo | None = None) -> int:
        """Frames per model call for frames of this size: on CUDA, the memory one frame takes (measured by
        running one) against the memory free or left under `max_memory`; CPU_BATCH on the CPU."""
        if self.device.type != "cuda":
            return CPU_BATCH
        colour = layout.without_alpha()
        shapes = [(height, width)] + [colorops.chroma_size(width, height, layout)] * (colour.planes - 1)
        shapes += [(height, width)] * layout.has_alpha
        dtype = torch.from_numpy(np.zeros(0, layout.dtype)).dtype  # as the runner uploads them
        planes = [torch.zeros((1, *shape), dtype=dtype, device=self.device) for shape in shapes]
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.upscale_planes(planes, layout, color, out_layout, out_color)
        if self.tile is not None:
            return 1  # one frame already needs tiles
        per_frame = torch.cuda.max_memory_allocated(self.device) - before
        allocated = torch.cuda.memory_allocated(self.device)
        # free on the device plus what PyTorch holds cached but unused
        free = torch.cuda.mem_get_info(self.device)[0] + torch.cuda.memory_reserved(self.device) - allocated
        if self.memory_cap is not None:
            free = min(free, self.memory_cap - allocated)
        return batch_for_memory(per_frame, free)

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    def _fit_tile(self, tile: int) -> int:
        """A tile side the model takes as it is: at least its minimum, a multiple of its size multiple."""
        multiple = self.descriptor.size_multiple
        return -(-max(tile, self.descriptor.size_min) // multiple) * multiple

    def _probe(self) -> torch.Tensor:
        """A small input the model accepts, in its precision."""
        side = self._fit_tile(MIN_TILE)
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((1, self.descriptor.run_channels, side, side), generator=generator)
        return x.to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)

    # --- the model call ----------------------------------------------------------------------------------

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model on (N,C,H,W) float, meeting its size requirements (whole frames and tiles alike); returns
        float32 at the model's scale."""
        return self.descriptor.run(x.to(self.dtype).contiguous(memory_format=torch.channels_last), self.model).float()

    @torch.inference_mode()
    def run_model(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (N,C,H,W) float on the device -> output float32, tiled as configured.

        On CUDA out-of-memory a batch is split in halves first; a single frame then has its tile size
        halved (starting from the frame size when untiled) until it fits, so a large frame degrades to
        slower tiles instead of failing.
        """
        with self._lock:
            # third-party models only: transformers' activations outgrow memory; vidsr's CNNs are measured
            if self.tile is None and self.descriptor.tiling != "internal" and self.descriptor.source == "spandrel":
                self._tile_if_too_large(x)
            while True:
                try:
                    if self.tile is None or self.tile >= max(x.shape[-2:]):
                        return self._forward(x)
                    return tiled_forward(self._forward, x, self.scale, self.tile, self.tile_pad)
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    if self.device.type != "cuda" or not is_out_of_memory(exc):
                        raise
                    if x.shape[0] > 1:
                        torch.cuda.empty_cache()
                        return torch.cat([self.run_model(part) for part in x.chunk(2)])
                    self._shrink_tile(max(x.shape[-2:]))

    def _shrink_tile(self, frame_side: int) -> None:
        torch.cuda.empty_cache()
        current = self.tile if self.tile is not None else frame_side
        smaller = self._fit_tile(current // 2)
        if current // 2 < MIN_TILE or smaller >= current:
            raise VidsrError(f"out of GPU memory even with {current}px tiles; use a smaller batch or model")
        self.tile = smaller

    def _tile_if_too_large(self, x: torch.Tensor) -> None:
        """Choose tiles before the first frame when its activations would not fit in memory (transformers on
        large frames): the cost per pixel is measured on a small probe, the budget is half the free memory."""
        tile = tile_for_budget(self._bytes_per_pixel() * x.shape[0], self._memory_budget(), *x.shape[-2:], MIN_TILE)
        if tile is not None:
            self.tile = self._fit_tile(tile)
            advice = " (its authors advise against tiles: seams are possible)" * (self.descriptor.tiling != "supported")
            log.warning("%s: a %dx%d frame would need more memory than is free: running it in %dpx tiles%s",
                        self.descriptor.arch, x.shape[-1], x.shape[-2], self.tile, advice)

    # --- RGB ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def upscale_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float RGB in [0,1] -> (N,3,sH,sW) float RGB in [0,1], on the upscaler's device."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise InputError(f"expected an (N,3,H,W) float RGB tensor, got {_describe(x)}")
        x = x.to(self.device, torch.float32)
        if self.descriptor.color == "rgb":
            return self.run_model(x).clamp_(0, 1)
        y, cb, cr = colorops.rgb_to_ycc(x, colorops.BT601)
        y_up = self._upscale_luma(y)
        height, width = y_up.shape[-2:]
        cb, cr = (colorops.resample_plane(c, height, width, (0, 0), (0, 0), self.scale) for c in (cb, cr))
        return colorops.ycc_to_rgb(y_up, cb, cr, colorops.BT601).clamp_(0, 1)

    def _upscale_luma(self, y: torch.Tensor) -> torch.Tensor:
        """(N,H,W) normalised luma -> upscaled normalised luma, through a Y-channel model (at the levels the
        model was trained on)."""
        if self.descriptor.luma_range == "full":
            return self.run_model(y.unsqueeze(1)).squeeze(1)
        out = self.run_model(colorops.luma_to_model(y).unsqueeze(1))
        return colorops.luma_from_model(out.squeeze(1))

    def upscale_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 RGB, HxWx4 RGBA or HxW (HxWx1) grey image, uint8 / uint16 / float in [0,1] -> upscaled image of
        the same shape and dtype. Alpha is resampled (sited cubic, like chroma), not run through the model."""
        _check_image(image)
        if image.ndim == 3 and image.shape[2] == 1:
            return self.upscale_image(image[..., 0])[..., None]
        if image.ndim == 2:
            return self.upscale_image(image[..., None].repeat(3, axis=2))[..., 0]
        peak = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / peak
        rgb = self.upscale_rgb(x[:, :3])
        if image.shape[2] == 4:
            rgb = torch.cat([rgb, self._upscale_alpha(x[:, 3].to(rgb.device)).clamp_(0, 1).unsqueeze(1)], dim=1)
        out = rgb[0].permute(1, 2, 0).cpu().numpy()
        if image.dtype.kind in "ui":
            return np.rint(out * peak).astype(image.dtype)
        return out.astype(image.dtype)

    # --- YUV planes --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def upscale_planes(self, planes: list[torch.Tensor], layout: PlaneLayout, color: ColorInfo,
                       out_layout: PlaneLayout | None = None, out_color: ColorInfo | None = None) -> list[torch.Tensor]:
        """Integer planes (each (N,h,w), on the device) -> upscaled integer planes of `out_layout` / `out_color`.

        Y-channel models on YUV keep the frame in Y'CbCr: the luma plane goes through the model and the
        chroma planes are resampled (sited cubic). RGB models convert with the stream's matrix and range.
        An alpha plane is resampled like chroma (not modelled); it is dropped, or made opaque, to match
        `out_layout`. Without `out_color` the output is described as the input, with the matrix the input was
        read with (untagged 360p is BT.601, and stays so at 720p out).
        """
        if out_color is None:
            out_color = color if layout.is_rgb else replace(color, matrix=color.resolved_matrix(planes[0].shape[-2]))
        out_layout = out_layout or layout
        colour_layout = layout.without_alpha()
        colour = self._upscale_colour_planes(planes[:colour_layout.planes], colour_layout, color,
                                             out_layout.without_alpha(), out_color)
        if not out_layout.has_alpha:
            return colour
        if not layout.has_alpha:  # opaque
            return colour + [colorops.encode_alpha(torch.ones_like(colour[0], dtype=torch.float32),
                                                   out_layout.bit_depth)]
        alpha = self._upscale_alpha(colorops.decode_alpha(planes[3], layout.bit_depth))
        return colour + [colorops.encode_alpha(alpha, out_layout.bit_depth)]

    def _upscale_alpha(self, alpha: torch.Tensor) -> torch.Tensor:
        """(N,h,w) float opacity -> (N,sh,sw): resampled like chroma, not run through the model."""
        height, width = alpha.shape[-2] * self.scale, alpha.shape[-1] * self.scale
        return colorops.resample_plane(alpha, height, width, (0, 0), (0, 0), self.scale)

    def _upscale_colour_planes(self, planes: list[torch.Tensor], layout: PlaneLayout, color: ColorInfo,
                               out_layout: PlaneLayout, out_color: ColorInfo) -> list[torch.Tensor]:
        keep_ycc = self.descriptor.color == "y" and not layout.is_rgb and not out_layout.is_rgb
        if not keep_ycc:
            rgb = self.upscale_rgb(colorops.planes_to_rgb(planes, layout, color))
            return colorops.rgb_to_planes(rgb, out_layout, out_color)
        y = self._upscale_luma(colorops.decode_luma(planes[0], layout.bit_depth, color.full_range))
        out = [colorops.encode_luma(y, out_layout.bit_depth, out_color.full_range)]
        if out_layout.is_gray:
            return out
        height, width = y.shape[-2:]
        c_height, c_width = colorops.chroma_size(width, height, out_layout)
        sub_in, sub_out = (layout.log2_chroma_w, layout.log2_chroma_h), (out_layout.log2_chroma_w,
                                                                         out_layout.log2_chroma_h)
        if layout.is_gray:  # grey in, colour out: neutral chroma
            zero = torch.zeros((y.shape[0], c_height, c_width), device=y.device)
            neutral = colorops.encode_chroma(zero, out_layout.bit_depth, out_color.full_range)
            return out + [neutral, neutral.clone()]
        for plane in planes[1:]:
            chroma = colorops.decode_chroma(plane, layout.bit_depth, color.full_range)
            chroma = colorops.resample_plane(chroma, c_height, c_width, sub_in, sub_out, self.scale,
                                             color.chroma_siting)
            out.append(colorops.encode_chroma(chroma, out_layout.bit_depth, out_color.full_range))
        return out


def _describe(x: object) -> str:
    shape = getattr(x, "shape", None)
    return f"{type(x).__name__} of shape {tuple(shape)} and dtype {x.dtype}" if shape is not None else type(x).__name__


def _check_image(image: object) -> None:
    """One InputError for what `upscale_image` cannot take, instead of clipped or scaled garbage out."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy image (np.asarray a PIL image; tensors go to upscale_rgb), "
                         f"got {_describe(image)}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape:
        raise InputError(f"expected an HxW grey, HxWx3 RGB or HxWx4 RGBA image, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and image.dtype.kind != "f":
        raise InputError(f"expected a uint8, uint16 or float image, got {image.dtype}")
    if image.dtype.kind == "f":
        low, high = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise InputError("the image holds NaN or infinite values")
        if low < -1e-3 or high > 1 + 1e-3:  # a rounding error past the range is no reason to refuse
            raise InputError(f"float images are expected in 0..1, this one spans {low:g}..{high:g}")
