"""What the page's buttons do, as plain functions of a Workspace (no Gradio here, so tests call them directly)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

import vidsr
from vidsr.errors import Cancelled, DecodeError, InputError
from vidsr.media import sink
from vidsr.media.info import MediaInfo, codec_name, copy_stream
from vidsr.models.zoo import DEFAULT_MODEL, ModelInfo
from vidsr.quality.resize import imresize_np
from web.limits import Limits
from web.sessions import JOB_RUNNING, Workspace

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Delivery encoders offered in the page (the engine also has intermediate ones such as ffv1 and prores_ks).
WEB_ENCODERS = ("libx264", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc")
# Containers that keep the input's streams as they are; anything else is written as Matroska.
MP4_FAMILY = ("mov", "mp4")
# What a browser plays from an MP4 (Gradio re-encodes anything else, which takes longer than the job itself).
BROWSER_VIDEO_CODECS = ("h264", "av1")
BROWSER_AUDIO_CODECS = ("aac", "mp3", "opus")


@dataclass(frozen=True)
class Upload:
    path: Path
    info: MediaInfo

    @property
    def is_image(self) -> bool:
        return self.info.is_image

    def summary(self) -> str:
        video = self.info.video
        parts = [f"**{self.path.name}**", "image" if self.is_image else "video", f"{video.width}x{video.height}"]
        if not self.is_image:
            if video.frame_rate:
                parts.append(f"{float(video.frame_rate):.3g} fps")
            if video.duration:
                parts.append(f"{video.duration:.1f} s")
            if video.frame_count:
                parts.append(f"{video.frame_count} frames")
            elif video.estimated_frames:
                parts.append(f"about {video.estimated_frames} frames")
            parts += [f"{s.kind} ({s.codec})" for s in self.info.others]
        return " · ".join(parts)


@dataclass(frozen=True)
class Preview:
    at_seconds: float
    original: np.ndarray
    bicubic: np.ndarray
    upscaled: np.ndarray
    model_seconds: float


@dataclass(frozen=True)
class JobOptions:
    model: str = DEFAULT_MODEL
    precision: str = "auto"
    encoder: str = "libx264"
    crf: int | None = None
    device: str = "auto"


def safe_name(name: str) -> str:
    """A file name made only of portable characters (the browser's name is shown, never used as a path)."""
    stem, dot, suffix = Path(name).name.rpartition(".")
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem if dot else suffix)[:80].strip("_") or "upload"
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix)[:8].lower() if dot else ""
    return f"{stem}.{suffix}" if suffix else stem


def accept_upload(workspace: Workspace, uploaded: Path, limits: Limits) -> Upload:
    """Move an uploaded file into the session folder, check the limits and probe it; drops the previous upload.

    A refused file is deleted at once."""
    if workspace.job_running:
        raise InputError(JOB_RUNNING)
    forget_upload(workspace)
    target = workspace.directory / "input" / safe_name(uploaded.name)
    target.parent.mkdir()
    shutil.move(uploaded, target)
    try:
        limits.check_size(target)
        info = vidsr.probe(target)
        limits.check_media(info)
    except Exception:
        shutil.rmtree(target.parent)
        raise
    workspace.upload = Upload(target, info)
    return workspace.upload


def forget_upload(workspace: Workspace) -> None:
    """Remove the session's upload, preview and result files."""
    for child in ("input", "preview", "output", "browser"):
        shutil.rmtree(workspace.directory / child, ignore_errors=True)
    workspace.upload = workspace.result = None


def current_upload(workspace: Workspace) -> Upload:
    if workspace.upload is None:
        raise InputError("upload a video or an image first")
    return workspace.upload


def read_frame(path: Path, at_seconds: float) -> tuple[np.ndarray, float]:
    """The RGB frame shown at `at_seconds` (the last one if the time is past the end) and its time."""
    frame = None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if at_seconds > 0 and stream.time_base:
                container.seek(int(at_seconds / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= at_seconds - 1e-6:
                    break
    except av.FFmpegError as exc:
        raise DecodeError(f"{path.name}: the frame at {at_seconds:.2f} s does not decode ({exc.strerror})") from None
    if frame is None:
        raise DecodeError(f"{path.name}: no frame decodes at {at_seconds:.2f} s")
    return frame.to_ndarray(format="rgb24"), frame.time or 0.0


@lru_cache(maxsize=2)
def upscaler_for(model: str, precision: str, device: str) -> vidsr.Upscaler:
    """Kept loaded between previews so that one takes a model run, not a model load."""
    return vidsr.Upscaler(model, device=device, precision=precision)


def make_preview(upload: Upload, at_seconds: float, options: JobOptions) -> Preview:
    """One frame through the model, next to MATLAB-bicubic upscaling by the same factor."""
    original, frame_time = read_frame(upload.path, at_seconds)
    upscaler = upscaler_for(options.model, options.precision, options.device)
    started = time.perf_counter()
    upscaled = upscaler.upscale_image(original)
    model_seconds = time.perf_counter() - started
    bicubic = imresize_np(original, size=upscaled.shape[:2])
    return Preview(frame_time, original, bicubic, upscaled, model_seconds)


def save_preview(workspace: Workspace, preview: Preview) -> tuple[Path, Path]:
    """Write the bicubic and model images as PNG into the session folder (removed with it)."""
    folder = workspace.directory / "preview"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    paths = folder / "bicubic.png", folder / "vidsr.png"
    for path, image in zip(paths, (preview.bicubic, preview.upscaled), strict=True):
        Image.fromarray(image).save(path, compress_level=1)
    return paths


def output_path(workspace: Workspace, upload: Upload, model: str) -> Path:
    if upload.is_image:
        suffix = ".png"
    else:
        suffix = ".mp4" if any(name in MP4_FAMILY for name in upload.info.container.split(",")) else ".mkv"
    return workspace.directory / "output" / f"{upload.path.stem}_{safe_name(model)}{suffix}"


def process(workspace: Workspace, options: JobOptions,
            report: Callable[[vidsr.Progress], None] | None = None, report_interval_s: float = 0.25) -> Path:
    """Upscale the whole upload with the engine (audio and subtitles kept); Cancel stops it between batches."""
    upload = current_upload(workspace)
    upscaler = upscaler_for(options.model, options.precision, options.device)
    encoder, crf = (None, None) if upload.is_image else (options.encoder, options.crf)  # images: PNG
    output = output_path(workspace, upload, options.model)

    def job(progress: Callable[[vidsr.Progress], None]) -> Path:
        return vidsr.upscale_video(upload.path, output, upscaler=upscaler, encoder=encoder, crf=crf,
                                   progress=progress, cancel=workspace.cancel_event)

    with workspace.job():
        if workspace.cancel_event.is_set():
            raise Cancelled("cancelled before it started")
        workspace.result = None
        shutil.rmtree(output.parent, ignore_errors=True)
        output.parent.mkdir()
        run_reporting(job, report or (lambda _: None), report_interval_s)
        workspace.result = output
    return output


def browser_copy(workspace: Workspace, result: Path) -> Path:
    """The result as the page's player can show it: an MKV's video (and browser-playable audio) remuxed into MP4
    without re-encoding; the download stays the MKV with every stream. Other results are shown as they are."""
    if result.suffix == ".mp4":
        return result
    folder = workspace.directory / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    copy = folder / f"{result.stem}.mp4"
    try:
        with av.open(str(result)) as source:
            video = first_stream(source.streams.video, BROWSER_VIDEO_CODECS)
            if video is None:
                return result  # Gradio converts it
            audio = first_stream(source.streams.audio, BROWSER_AUDIO_CODECS)
            remux(source, [s for s in (video, audio) if s is not None], copy)
    except av.FFmpegError:
        return result  # the download is whole; only the player falls back to Gradio's conversion
    return copy


def remux(source: av.container.InputContainer, streams: list[av.stream.Stream], target_path: Path) -> None:
    with av.open(str(target_path), "w", format="mp4", options={"movflags": "+faststart"}) as target:
        outputs = {s.index: copy_stream(target, s) for s in streams}
        for packet in source.demux(streams):
            if packet.size:  # not the demuxer's end-of-stream marker
                packet.stream = outputs[packet.stream.index]
                target.mux(packet)


def first_stream(streams: Iterable[av.stream.Stream], codecs: tuple[str, ...]) -> av.stream.Stream | None:
    return next((s for s in streams if codec_name(s) in codecs), None)  # av1, not the libdav1d decoder


def run_reporting[T](job: Callable[[Callable[[vidsr.Progress], None]], T],
                     report: Callable[[vidsr.Progress], None], interval_s: float) -> T:
    """Run `job` in a worker thread and pass its latest progress to `report` from this thread.

    Gradio's progress bar only works from the handler's own thread (it reads context variables), while the
    engine may report from any of its threads."""
    latest: list[vidsr.Progress | None] = [None]

    def remember(progress: vidsr.Progress) -> None:
        latest[0] = progress

    shown = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidsr-web-job") as pool:
        future = pool.submit(job, remember)
        while True:
            done = wait([future], timeout=interval_s).done
            if latest[0] is not shown:
                shown = latest[0]
                report(shown)
            if done:
                return future.result()


def known_total(progress: vidsr.Progress) -> int | None:
    """The expected frame count, unless unknown or already passed (container durations can be short)."""
    return progress.total if progress.total and progress.frames <= progress.total else None


def describe_progress(progress: vidsr.Progress) -> str:
    total = f"/{known_total(progress)}" if known_total(progress) else ""
    eta = f" · ETA {format_duration(progress.eta)}" if progress.eta is not None else ""
    return f"{progress.frames}{total} frames · {progress.fps:.1f} fps{eta}"


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def available_encoders() -> list[str]:
    """The delivery encoders this FFmpeg build has (NVENC ones only next to a CUDA device)."""
    return [name for name in sink.available_encoders()
            if name in WEB_ENCODERS and (torch.cuda.is_available() or not name.endswith("_nvenc"))]


def speed_class(gmacs_1080p: float) -> str:
    """Rough speed class from the compute per 1080p output frame."""
    if gmacs_1080p < 50:
        return "fast"
    return "medium" if gmacs_1080p < 500 else "slow"


def model_label(info: ModelInfo) -> str:
    psnr = f"Set5 {info.set5_psnr:.2f} dB" if info.set5_psnr is not None else "PSNR not measured"
    if info.pairs == "degraded":  # its PSNR on clean bicubic input says little about what it is for
        psnr = f"real-world (compressed, noisy input); {psnr}"
    return f"{info.name} · ×{info.scale} · {speed_class(info.gmacs_1080p)} · {psnr}"
