"""`sr.upscale`: super-resolution of a clip with the vidsr engine (the same Upscaler as the CLI).

Integer clips (YUV, GRAY, RGB, 8-16 bit) go to the engine as integer planes with the colour description
of their frame props, exactly as the CLI feeds decoded planes, so both give the same pixels. Float RGB
goes to the engine as RGB; float YUV/GRAY is converted to 16-bit full range with `core.resize` (no
matrix change) and back. The result keeps the clip's format, length, rate and every frame prop.
"""

from __future__ import annotations

import os
import threading
from typing import Literal

import numpy as np
import torch
import vapoursynth as vs

from vidsr.compute.upscaler import Upscaler, resolve_device
from vidsr.errors import VidsrError
from vidsr.formats import UNSPECIFIED, ColorInfo, PlaneLayout
from vidsr.media.holds import HeldFrames, ReuseHeld, reuse_threshold
from vidsr.models.chain import load_models
from vidsr.models.zoo import DEFAULT_MODEL
from vsvidsr.batching import BatchScheduler, EngineCall, Worker, batch_members

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Device = Literal["auto", "cpu", "cuda"]


def upscale(
    clip: vs.VideoNode,
    model: str | os.PathLike = DEFAULT_MODEL,
    device_index: int = 0,
    num_streams: int = 1,
    batch_size: int = 1,
    tile: int | None = None,
    tile_pad: int = 16,
    precision: Precision = "auto",
    device: Device = "auto",
    strength: float | None = None,
    reuse_held: ReuseHeld = True,
) -> vs.VideoNode:
    """Upscale a clip with a vidsr super-resolution model.

    Args:
        clip: constant-format, constant-size clip: RGBS/RGBH, or YUV/GRAY/RGB of 8-16 bit integer or
            float samples. YUV colour is interpreted with the frames' `_Matrix`, `_Range` (or legacy
            `_ColorRange`), `_ChromaLocation`, `_Primaries` and `_Transfer` props; an unspecified matrix
            means BT.709 from 720 lines up and BT.601 below (of the input: the output keeps its matrix).
        model: bundled model name (see `vidsr models`) or a weight file (.safetensors / .pth, vidsr's or a
            community one: `vidsr models --architectures`); "A,B" chains models in one pass.
        device_index: CUDA GPU to run on when `device` is "auto" (with a GPU present) or "cuda".
        num_streams: frames processed at the same time: CUDA streams with pinned host buffers on a GPU,
            worker threads on the CPU. VapourSynth must request that many frames in parallel
            (core.num_threads and vspipe --requests).
        batch_size: frames per model call; frames n*batch_size .. n*batch_size+batch_size-1 always run
            together, so the output does not depend on request order.
        tile: tile size in input pixels for frames too large for GPU memory; None runs whole frames
            (and the engine falls back to halving tiles on out-of-memory).
        tile_pad: overlap in input pixels between tiles, cross-faded.
        precision: "auto" (fp16 on CUDA where the model supports it; bf16 on a CPU with native bf16, such as
            AVX512-BF16 or AMX; else fp32), "fp32", "fp16", "bf16".
        device: "auto" (GPU `device_index` when CUDA is available, else CPU), "cpu" or "cuda".
        strength: for a GAN model whose weights name a PSNR model: interpolate their weights, 0 (PSNR model)
            to 1 (GAN model as trained).
        reuse_held: a frame requested right after the frame before it was made, whose input repeats the input
            of the last frame upscaled, gets that output again instead of the model. True: exact repeats
            (the same picture as upscaling it); a number: within that many 8-bit levels in every sample
            (1 takes in codec noise; see vidsr/media/holds.py); False: every frame through the model.

    Returns:
        The clip at the model's scale in the same format, with the same length, frame rate and frame
        props (durations, colour, SAR; a uniform scale leaves the sample aspect ratio unchanged).
    """
    _check_clip(clip)
    _check_arguments(model, device_index, num_streams, batch_size, tile, tile_pad, precision, device, strength)
    try:
        reuse = reuse_threshold(reuse_held)
        descriptor = load_models(model, strength)
        target = resolve_device(_device_name(device, device_index))
        first = Upscaler(descriptor, target, precision, tile, tile_pad)
        upscalers = [first] + [first.replica() for _ in range(num_streams - 1)]
    except VidsrError as exc:
        hint = ("; relative paths are read from the script's folder under vspipe: pass an absolute path"
                if "no model named or found" in str(exc) and not os.path.isabs(model) else "")
        raise vs.Error(f"vsvidsr.upscale: {exc}{hint}") from None
    work = working_clip(clip)
    scheduler = BatchScheduler([Worker(engine_call(u, work.format), target) for u in upscalers], batch_size)
    template = vs.core.std.BlankClip(work, width=work.width * descriptor.scale,
                                     height=work.height * descriptor.scale, keep=True)
    last = None if reuse is None else LastMade(HeldFrames(reuse, sample_bits(work.format)))

    def deliver(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:  # ModifyFrame passes n= and f=
        source = f[1 + n % batch_size]  # frame n among the members of its batch
        reused = last.reuse(n, source) if last else None
        if reused is not None:
            scheduler.skip(n)
            return reused
        try:
            planes = scheduler.frame(n, f[1:])
        except (VidsrError, RuntimeError, ValueError) as exc:
            raise vs.Error(f"vsvidsr.upscale: frame {n}: {exc}") from exc
        out = f[0].copy()
        for plane, data in enumerate(planes):
            np.copyto(np.asarray(out[plane]), data)
        if last:
            last.made(n, source, out)
        return out

    sources = [template, *batch_members(work, batch_size)]
    # VapourSynth runs one ModifyFrame node's callbacks one at a time; a node per frame (made by FrameEval)
    # lets the frames VapourSynth requests in parallel reach the workers together.
    upscaled = template.std.FrameEval(lambda n: template.std.ModifyFrame(sources, deliver), clip_src=sources)
    return vs.core.std.CopyFrameProps(restore_format(upscaled, clip.format), clip)


class LastMade:
    """The last frame made, for held frames. VapourSynth asks for frames from several threads in any order, so a
    frame reuses an output only when the frame before it was the last one made (a player or vspipe going
    forward); every other request is upscaled, and the output then depends on the request order only within
    the threshold (not at all for exact repeats)."""

    def __init__(self, holds: HeldFrames) -> None:
        self.holds = holds
        self._lock = threading.Lock()
        self._n = -2
        self._source: vs.VideoFrame | None = None  # the input of the last frame upscaled
        self._output: vs.VideoFrame | None = None

    def reuse(self, n: int, source: vs.VideoFrame) -> vs.VideoFrame | None:
        """The output made last if frame n, whose input is `source`, may have it; else None."""
        with self._lock:
            if self._n != n - 1 or self._source is None:
                return None
            if not self.holds.same(frame_planes(source), frame_planes(self._source)):
                return None
            self._n = n
            return self._output.copy()

    def made(self, n: int, source: vs.VideoFrame, output: vs.VideoFrame) -> None:
        with self._lock:
            self._n, self._source, self._output = n, source, output


def frame_planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.asarray(frame[p]) for p in range(frame.format.num_planes)]


def sample_bits(fmt: vs.VideoFormat) -> int | None:
    """Bits per sample of an integer format, None for float samples (compared in [0, 1])."""
    return fmt.bits_per_sample if fmt.sample_type == vs.INTEGER else None


def _check_arguments(model: object, device_index: object, num_streams: object, batch_size: object, tile: object,
                     tile_pad: object, precision: object, device: object, strength: object) -> None:
    """Wrong types and values as vs.Error, as VapourSynth users expect (not TypeError from deep inside)."""
    if not isinstance(model, (str, os.PathLike)):
        raise vs.Error(f"vsvidsr.upscale: model must be a model name or a file path, not {type(model).__name__}")
    whole = {"device_index": device_index, "num_streams": num_streams, "batch_size": batch_size, "tile_pad": tile_pad,
             **({} if tile is None else {"tile": tile})}  # their ranges are checked by the engine
    for name, value in whole.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise vs.Error(f"vsvidsr.upscale: {name} must be a whole number, not {value!r}")
    if num_streams < 1 or batch_size < 1:
        raise vs.Error("vsvidsr.upscale: num_streams and batch_size must be at least 1")
    for name, value in (("precision", precision), ("device", device)):
        if not isinstance(value, str):
            raise vs.Error(f"vsvidsr.upscale: {name} must be a string, not {value!r}")
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))):
        raise vs.Error(f"vsvidsr.upscale: strength must be a number from 0 to 1, not {strength!r}")


def _check_clip(clip: vs.VideoNode) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error("vsvidsr.upscale: clip must be a video clip")
    if clip.format is None or clip.format.color_family == vs.UNDEFINED or clip.width == 0 or clip.height == 0:
        raise vs.Error("vsvidsr.upscale: variable-format or variable-size clips are not supported; "
                       "convert to one format and size first (e.g. core.resize.Bicubic)")
    if clip.format.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise vs.Error(f"vsvidsr.upscale: unsupported format {clip.format.name}")
    if clip.format.sample_type == vs.INTEGER and clip.format.bits_per_sample > 16:
        raise vs.Error(f"vsvidsr.upscale: {clip.format.name} has {clip.format.bits_per_sample}-bit integer samples; "
                       "the engine takes 8 to 16 bit (convert with core.resize, e.g. to GRAY16 or GRAYS)")


def _device_name(device: Device, device_index: int) -> str:
    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{device_index}"
        if device_index:
            raise vs.Error(f"vsvidsr.upscale: device_index={device_index} but there is no CUDA GPU; leave it out "
                           "(or use device='cpu')")
        return "cpu"
    if device == "cuda":
        return f"cuda:{device_index}"
    if device == "cpu":
        return "cpu"
    raise vs.Error(f"vsvidsr.upscale: unknown device {device!r} (use auto, cpu or cuda)")


def working_clip(clip: vs.VideoNode) -> vs.VideoNode:
    """The clip in a format the engine takes: RGBS for float RGB, 16-bit full range for float YUV/GRAY."""
    fmt = clip.format
    if fmt.sample_type == vs.INTEGER or fmt.id == vs.RGBS:
        return clip
    if fmt.color_family == vs.RGB:
        return vs.core.resize.Point(clip, format=vs.RGBS)
    integer = fmt.replace(sample_type=vs.INTEGER, bits_per_sample=16)
    return vs.core.resize.Point(clip, format=integer.id, range=vs.RANGE_FULL)


def restore_format(clip: vs.VideoNode, fmt: vs.VideoFormat) -> vs.VideoNode:
    """Back from the working format, which is full range (the upscaled frames carry no range prop yet)."""
    return clip if clip.format.id == fmt.id else vs.core.resize.Point(clip, format=fmt.id, range_in=vs.RANGE_FULL)


def engine_call(upscaler: Upscaler, fmt: vs.VideoFormat) -> EngineCall:
    """The Upscaler method for frames of `fmt` (RGBS or integer planes), as per-plane tensors in and out."""
    if fmt.sample_type == vs.FLOAT:
        return lambda planes, props: upscaler.upscale_rgb(torch.stack(planes, dim=1)).unbind(1)
    layout = plane_layout(fmt)
    return lambda planes, props: upscaler.upscale_planes(planes, layout, color_info(props))


def plane_layout(fmt: vs.VideoFormat) -> PlaneLayout:
    return PlaneLayout(pix_fmt=fmt.name, bit_depth=fmt.bits_per_sample, log2_chroma_w=fmt.subsampling_w,
                       log2_chroma_h=fmt.subsampling_h, is_rgb=fmt.color_family == vs.RGB,
                       planes=fmt.num_planes)


def color_info(props: vs.FrameProps) -> ColorInfo:
    """Colour description from frame props; integer YUV without a range prop is limited range."""
    if "_Range" in props:
        full_range = props["_Range"] == vs.RANGE_FULL
    else:  # before R81 the prop was _ColorRange, 0 = full, 1 = limited (reading it warns, so only if set)
        full_range = "_ColorRange" in props and props["_ColorRange"] == 0
    location = props.get("_ChromaLocation")  # VapourSynth counts from left = 0, FFmpeg from unspecified = 0
    return ColorInfo(matrix=int(props.get("_Matrix", UNSPECIFIED)),
                     primaries=int(props.get("_Primaries", UNSPECIFIED)),
                     transfer=int(props.get("_Transfer", UNSPECIFIED)), full_range=full_range,
                     chroma_location=0 if location is None else int(location) + 1)
