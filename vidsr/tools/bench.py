"""`vidsr bench`: per-stage throughput, end-to-end and model-only fps, and a naive frame-by-frame loop.

The naive loop is the Real-ESRGAN video script's pattern (decode -> rgb24 ndarray -> model -> ndarray ->
encode, one frame at a time, synchronously) with the same model, clip and encoder: it is the denominator
every other figure is quoted against.

Next to model-only fps the bench reports the model's achieved GMAC/s (its convolutions' multiply-accumulates
a frame times frames a second) against a measured peak: on the CPU a large 3x3 convolution in the model's
precision, measured once per CPU, torch version and thread count and cached on disk; on CUDA a dense matmul.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np
import torch

from vidsr.compute.upscaler import BatchSize, Upscaler, _cpu_flags, cpu_runs_bf16
from vidsr.formats import ColorInfo, PlaneLayout
from vidsr.media.frames import frame_to_planes, plane_layout, planes_to_frame, working_format
from vidsr.media.info import probe
from vidsr.media.pipeline import Progress, upscale_video
from vidsr.media.sink import EncodeSettings, encoder_options
from vidsr.media.source import Source
from vidsr.tools.sample import ClipSpec, write_clip


@dataclass
class BenchResult:
    model: str
    compiled: bool
    device: str
    device_name: str
    precision: str
    input_size: str
    output_size: str
    batch_size: int
    frames: int
    encoder: str
    encoder_options: dict[str, str]
    decode_fps: float
    upload_fps: float | None
    model_fps: float
    download_fps: float | None
    encode_fps: float
    end_to_end_fps: float
    steady_fps: float | None  # end to end after the first batch: without start-up (warm-up, cuDNN, encoder)
    naive_fps: float
    model_gmacs_per_s: float  # the model's convolution MACs a frame x model-only fps
    peak_gmacs_per_s: float  # the measured peak in the model's precision (see `peak_gmacs_per_s`)
    peak_kind: str  # what the peak is: a 3x3 convolution (CPU) or a dense matmul (CUDA)
    cpu_conv_peaks: dict[str, float]  # the CPU's measured convolution peak per precision it runs, GMAC/s
    model_tflops: float
    peak_tflops: float
    roofline_fraction: float
    peak_gpu_memory_mb: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("decode", self.decode_fps), ("upload (H2D)", self.upload_fps), ("model only", self.model_fps),
            ("download (D2H)", self.download_fps), ("encode", self.encode_fps),
            ("end to end (vidsr)", self.end_to_end_fps), ("end to end after the first batch", self.steady_fps),
            ("naive frame loop", self.naive_fps),
        ]
        lines = [f"{self.model}{' (compiled)' if self.compiled else ''} on {self.device_name} ({self.precision}), "
                 f"{self.input_size} -> {self.output_size}, "
                 f"batch {self.batch_size}, {self.frames} frames, encoder {self.encoder} {self.encoder_options}",
                 "| stage | fps |", "|---|---|"]
        lines += [f"| {name} | {fps:.2f} |" for name, fps in rows if fps is not None]
        lines += [
            f"end to end / model only: {self.end_to_end_fps / self.model_fps:.2f}; "
            f"end to end / naive: {self.end_to_end_fps / self.naive_fps:.2f}x",
            f"model only: {self.model_gmacs_per_s:.1f} GMAC/s ({self.model_tflops:.3f} TFLOP/s) of a measured "
            f"{self.peak_gmacs_per_s:.1f} GMAC/s {self.peak_kind} peak ({self.roofline_fraction:.1%})",
        ]
        if self.cpu_conv_peaks:
            lines.append("CPU convolution peak: " + ", ".join(f"{precision} {gmacs:.1f} GMAC/s"
                                                              for precision, gmacs in self.cpu_conv_peaks.items()))
        if self.peak_gpu_memory_mb is not None:
            lines.append(f"peak GPU memory: {self.peak_gpu_memory_mb:.0f} MB")
        return "\n".join(lines)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


clock = time.perf_counter  # the bench's timer (a test replaces it)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    _sync(device)
    start = clock()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (clock() - start) / repeats


def measure_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Dense matmul throughput of the device in `dtype`: the roofline a CUDA model is compared with."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _timed(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3)
    return 2 * n**3 / seconds / 1e12


# The CPU peak's convolution: 64 -> 64 channels, 3x3, the layer that Compact and RRDB networks are made of, on a
# map large enough to stream through the caches as a video frame does (2.4 GMAC a call).
PEAK_CONV = (64, 64, 3, 256, 256)
PEAK_SECONDS = 1.5  # a best-of over about this long: the CPU's speed, not a busy moment's


def measure_cpu_conv_gmacs(dtype: torch.dtype) -> float:
    """The best GMAC/s of a channels-last 3x3 64 -> 64 convolution in `dtype` on the CPU, as the engine runs it
    (oneDNN, inference, torch's current thread count)."""
    cin, cout, k, h, w = PEAK_CONV
    x = torch.rand(1, cin, h, w, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(cout, cin, k, k, dtype=dtype).contiguous(memory_format=torch.channels_last)
    macs = h * w * cout * cin * k * k
    with torch.inference_mode():
        conv = lambda: torch.nn.functional.conv2d(x, weight, padding=k // 2)  # noqa: E731
        best = _timed(conv, torch.device("cpu"))
        deadline = time.perf_counter() + PEAK_SECONDS
        while time.perf_counter() < deadline:
            best = min(best, _timed(conv, torch.device("cpu")))
    return macs / best / 1e9


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what Python's platform module knows."""
    for line in _cpu_flags().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_simd_flags() -> str:
    """The vector-instruction flags that decide which kernels oneDNN and ncnn pick."""
    flags = next((line.split(":", 1)[1].split() for line in _cpu_flags().splitlines() if line.startswith("flags")),
                 [])
    wanted = ("avx", "fma", "f16c", "amx")
    return " ".join(flag for flag in flags if flag.startswith(wanted)) or "unknown"


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidsr"


def cpu_conv_peak(dtype: torch.dtype, measure: Callable[[torch.dtype], float] = measure_cpu_conv_gmacs,
                  refresh: bool = False) -> float:
    """The CPU's convolution peak in `dtype` (GMAC/s), measured once per CPU model, torch version, thread count
    and dtype, then read from the cache (a second or two of benchmark, every `vidsr bench` otherwise).
    `refresh` measures it again: a peak measured while other work held the CPU is too low."""
    path = cache_folder() / "cpu_conv_peak.json"
    precision = str(dtype).split(".")[-1]
    key = f"{cpu_name()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {precision}"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if refresh or not isinstance(cached, dict) or not isinstance(cached.get(key), float):
        cached = cached if isinstance(cached, dict) else {}
        cached[key] = measure(dtype)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(cached, indent=1))
        except OSError:  # a read-only home: measured again next time, nothing else lost
            pass
    return cached[key]


def cpu_conv_peaks(refresh: bool = False) -> dict[str, float]:
    """The convolution peak in every precision this CPU runs convolutions in."""
    dtypes = [torch.float32] + [torch.bfloat16] * cpu_runs_bf16()
    return {str(dtype).split(".")[-1]: cpu_conv_peak(dtype, refresh=refresh) for dtype in dtypes}


def peak_gmacs_per_s(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The peak a model in `dtype` on `device` is compared with, and what it is (on the CPU: from the cache that
    `cpu_conv_peaks` has just filled)."""
    if device.type == "cpu":
        cin, cout, k, h, w = PEAK_CONV
        return cpu_conv_peak(dtype), f"{k}x{k} {cin}->{cout} convolution ({w}x{h}, channels-last)"
    return measure_peak_tflops(device, dtype) * 1000 / 2, "dense matmul"


def achieved(gmacs_per_frame: float, fps: float, peak_gmacs: float) -> tuple[float, float]:
    """The model's GMAC/s at `fps` frames a second, and its share of the peak."""
    gmacs_per_s = gmacs_per_frame * fps
    return gmacs_per_s, gmacs_per_s / peak_gmacs


def frame_planes(clip: Path, batch_size: int) -> tuple[list[torch.Tensor], PlaneLayout, ColorInfo]:
    """The clip's first frame as the engine's planes, `batch_size` times over, with their layout and colour."""
    video = probe(clip).video
    with av.open(str(clip)) as container:
        first = next(container.decode(video=0))
    planes = [torch.from_numpy(np.stack([p] * batch_size)) for p in frame_to_planes(first)]
    return planes, plane_layout(working_format(video.pix_fmt)), video.color


def model_seconds(upscaler: Upscaler, planes: list[torch.Tensor], layout: PlaneLayout, color: ColorInfo,
                  repeats: int) -> float:
    """Seconds per `upscale_planes` call (colour conversion, model, quantisation) on device-resident planes."""
    return _timed(lambda: upscaler.upscale_planes(planes, layout, color), upscaler.device, repeats)


def decode_fps(path: Path) -> float:
    source = Source(path)
    count = 0

    def on_frame(_frame: object) -> None:
        nonlocal count
        count += 1

    start = time.perf_counter()
    source.run(on_frame, lambda _packet: None, ())
    source.close()
    return count / (time.perf_counter() - start)


def encode_fps(planes: list[np.ndarray], pix_fmt: str, encoder: str, options: dict[str, str], frames: int) -> float:
    """Encoding speed at the output size: the same upscaled picture, `frames` times."""
    picture = planes_to_frame(planes, pix_fmt)
    with tempfile.TemporaryDirectory() as tmp, av.open(str(Path(tmp) / "o.mkv"), "w") as out:
        stream = out.add_stream(encoder, rate=24)
        stream.width, stream.height, stream.pix_fmt = picture.width, picture.height, pix_fmt
        stream.codec_context.options = options
        start = time.perf_counter()
        for i in range(frames):
            picture.pts = i
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
        return frames / (time.perf_counter() - start)


def naive_loop_fps(path: Path, output: Path, upscaler: Upscaler, encoder: str, options: dict[str, str]) -> float:
    """Frame by frame through rgb24 ndarrays, synchronously: the Real-ESRGAN video script's loop."""
    start = time.perf_counter()
    count = 0
    with av.open(str(path)) as src, av.open(str(output), "w") as out:
        stream = None
        for frame in src.decode(video=0):
            image = upscaler.upscale_image(frame.to_ndarray(format="rgb24"))
            if stream is None:
                stream = out.add_stream(encoder, rate=24, options=options)
                stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            count += 1
        out.mux(stream.encode(None))
    return count / (time.perf_counter() - start)


def run_bench(model: str = "espcn-x2", width: int = 640, height: int = 360, frames: int = 48,
              batch_size: BatchSize = None, precision: str = "auto", device: str = "auto",
              encoder: str = "libx264", input_path: Path | None = None, compile: bool = False, tile: int | None = None,
              max_memory: float | None = None, hwdec: str | None = None, crf: int | None = None,
              preset: str | None = None, remeasure_peak: bool = False) -> BenchResult:
    """Every figure on one clip; the engine, the naive loop and the encode stage share the encoder settings.
    On the CPU the convolution peak is measured first (or read from its cache unless `remeasure_peak`), before
    anything else of this run is in memory."""
    options = encoder_options(EncodeSettings(encoder, crf, preset), encoder)
    upscaler = Upscaler(model, device=device, precision=precision, compile=compile, tile=tile, max_memory=max_memory)
    dev = upscaler.device
    conv_peaks = cpu_conv_peaks(remeasure_peak) if dev.type == "cpu" else {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = input_path or write_clip(Path(tmp) / "bench.mkv", ClipSpec(width=width, height=height, frames=frames,
                                                                          options=(("preset", "ultrafast"),)))
        video = probe(clip).video
        width, height = video.width, video.height
        batch_size = upscaler.batch_size(batch_size, plane_layout(working_format(video.pix_fmt)), video.color,
                                         width, height)
        host, layout, color = frame_planes(clip, batch_size)
        device_planes = [p.to(dev) for p in host]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        seconds = model_seconds(upscaler, device_planes, layout, color, repeats=max(1, frames // batch_size // 4))
        out_planes = upscaler.upscale_planes(device_planes, layout, color)
        upload = download = None
        if dev.type == "cuda":
            # Both directions as the runner copies: between pinned host buffers and the device, asynchronously.
            pinned_in = [p.pin_memory() for p in host]
            pinned_out = [torch.empty(p.shape, dtype=p.dtype, pin_memory=True) for p in out_planes]
            upload = batch_size / _timed(lambda: [d.copy_(h, non_blocking=True)
                                                  for d, h in zip(device_planes, pinned_in, strict=True)], dev, 10)
            download = batch_size / _timed(lambda: [h.copy_(d, non_blocking=True)
                                                    for h, d in zip(pinned_out, out_planes, strict=True)], dev, 10)
        peak_memory = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        model_fps = batch_size / seconds
        progress: list[Progress] = []
        upscale_video(clip, Path(tmp) / "vidsr.mkv", upscaler=upscaler, batch_size=batch_size, encoder=encoder,
                      crf=crf, preset=preset, overwrite=True, progress=progress.append, hwdec=hwdec)
        end_to_end = progress[-1].fps
        first, last = progress[0], progress[-1]
        steady = (last.frames - first.frames) / (last.elapsed - first.elapsed) if len(progress) > 1 else None
        # The naive loop is what a plain script does: eager model, no compile.
        eager = Upscaler(model, device=device, precision=precision, tile=upscaler.tile) if compile else upscaler
        naive = naive_loop_fps(clip, Path(tmp) / "naive.mkv", eager, encoder, options)
        decode = decode_fps(clip)
        encode = encode_fps([p[0].cpu().numpy() for p in out_planes], layout.pix_fmt, encoder, options,
                             min(frames, 24))
    peak, peak_kind = peak_gmacs_per_s(dev, upscaler.dtype)
    gmacs, fraction = achieved(upscaler.descriptor.gmacs(width * upscaler.scale, height * upscaler.scale),
                               model_fps, peak)
    return BenchResult(
        model=str(model), compiled=compile, device=str(dev), device_name=_device_name(dev),
        precision=str(upscaler.dtype).split(".")[-1],
        input_size=f"{width}x{height}", output_size=f"{width * upscaler.scale}x{height * upscaler.scale}",
        batch_size=batch_size, frames=progress[-1].frames, encoder=encoder, encoder_options=options,
        decode_fps=decode,
        upload_fps=upload, model_fps=model_fps, download_fps=download, encode_fps=encode, end_to_end_fps=end_to_end,
        steady_fps=steady,
        naive_fps=naive, model_gmacs_per_s=gmacs, peak_gmacs_per_s=peak, peak_kind=peak_kind,
        cpu_conv_peaks=conv_peaks,
        model_tflops=gmacs * 2 / 1000, peak_tflops=peak * 2 / 1000, roofline_fraction=fraction,
        peak_gpu_memory_mb=peak_memory,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({cpu_simd_flags()}), {torch.get_num_threads()} threads"
