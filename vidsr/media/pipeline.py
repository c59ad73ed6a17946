"""upscale_video(): source thread -> batches -> runner (calling thread) -> sink thread.

Stages talk through bounded queues, so memory does not grow with the length of the video. The first
error in any stage stops every stage and is re-raised in the caller; Ctrl-C and a cancel event do the
same. Output goes to a temporary file beside the target that is renamed only once it is complete.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vidsr.errors import Cancelled, InputError, OutputError
from vidsr.media.frames import crop_planes, plane_layout, planes_to_frame, working_format
from vidsr.media.info import MediaInfo, probe
from vidsr.media.sink import EncodeSettings, Sink
from vidsr.media.source import DecodedFrame, Source
from vidsr.runner import Batch, BatchRunner
from vidsr.upscaler import Upscaler

log = logging.getLogger("vidsr")

IMAGE_ENCODERS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
                  ".webp": "libwebp"}
_END = object()


@dataclass(frozen=True)
class Progress:
    """Frames written so far, the expected total (None when unknown) and seconds since the start."""

    frames: int
    total: int | None
    elapsed: float

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.total is None or self.fps == 0:
            return None
        return max(self.total - self.frames, 0) / self.fps


ProgressCallback = Callable[[Progress], None]


class _Stopped(Exception):
    """Raised inside a stage when another stage failed or the job was cancelled."""


class _Channel:
    """A bounded queue whose blocking calls give up as soon as the job is stopping."""

    def __init__(self, size: int, stopping: Callable[[], bool]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self._stopping = stopping

    def put(self, item: Any) -> None:
        while True:
            if self._stopping():
                raise _Stopped
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        while True:
            if self._stopping():
                raise _Stopped
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def drain(self) -> Iterator[Any]:
        while (item := self.get()) is not _END:
            yield item


class _Stage(threading.Thread):
    def __init__(self, name: str, target: Callable[[], None], stopping: threading.Event) -> None:
        super().__init__(name=f"vidsr-{name}", daemon=True)
        self._target_fn, self._stopping = target, stopping
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            self._stopping.set()


# Inputs whose own format cannot hold the upscaled result (GIF: a 256-colour palette) are written as MP4.
_OUTPUT_SUFFIX = {".gif": ".mp4"}


def output_name(input_path: Path, tag: str = "") -> str:
    """The output file's name for `input_path`: its stem, `tag`, and its suffix (GIF: MP4)."""
    return f"{input_path.stem}{tag}{_OUTPUT_SUFFIX.get(input_path.suffix.lower(), input_path.suffix)}"


def default_output(input_path: Path, scale: int) -> Path:
    return input_path.with_name(output_name(input_path, f"_x{scale}"))


def check_output(input_path: Path, output: Path, overwrite: bool) -> None:
    if output.resolve() == input_path.resolve():
        raise OutputError(f"{output}: output would overwrite the input")
    if not output.parent.is_dir():
        raise OutputError(f"{output.parent}: output directory does not exist")
    if not output.suffix:
        raise OutputError(f"{output}: no suffix to choose the output format by (such as .mp4, .mkv or .png)")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")


@contextlib.contextmanager
def temporary_output(output: Path) -> Iterator[Path]:
    """A temporary path beside `output`, renamed onto it only when the block succeeds, removed otherwise.

    Partial files that a killed run (SIGKILL, out of memory, power loss) could not remove are removed here.
    """
    _remove_stale_partials(output)
    tmp = output.with_name(f"{_partial_prefix(output)}{os.getpid()}{output.suffix}")
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _partial_prefix(output: Path) -> str:
    """Temporary files for `output` are named <prefix><pid><suffix>."""
    return f".{output.stem}.partial-"


def _remove_stale_partials(output: Path) -> None:
    prefix = _partial_prefix(output)
    for partial in output.parent.glob(f"{glob.escape(prefix)}*{glob.escape(output.suffix)}"):
        pid = partial.name[len(prefix):len(partial.name) - len(output.suffix)]
        if pid.isdigit() and not _process_exists(int(pid)):
            partial.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _batches(frames: _Channel, size: int) -> Iterator[Batch]:
    batch: list[DecodedFrame] = []
    for frame in frames.drain():
        batch.append(frame)
        if len(batch) == size:
            yield Batch([f.planes for f in batch], batch)
            batch = []
    if batch:
        yield Batch([f.planes for f in batch], batch)


def _progress_reporter(progress: ProgressCallback | bool | None, info: MediaInfo) -> tuple[ProgressCallback, Callable]:
    """A callback for the chosen kind of progress report, and a function that closes it."""
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return lambda p: None, lambda: None
    bar = tqdm(total=info.video.estimated_frames, unit="frame", desc=info.path.name, dynamic_ncols=True,
               leave=True)
    notices = contextlib.ExitStack()
    notices.enter_context(logging_redirect_tqdm())  # notices print above the bar instead of into its line

    def report(p: Progress) -> None:
        if bar.total is not None and p.frames > bar.total:
            bar.total = None  # the estimate was short: fall back to a count without ETA
        bar.update(p.frames - bar.n)

    def close() -> None:
        bar.total = bar.n  # an estimated total was only an estimate: end the bar at what was done
        bar.close()
        notices.close()

    return report, close


def cpu_encoder_threads(cores: int) -> int:
    """Encoder threads beside a model running on the CPU, which already keeps every core busy: a full encoder
    thread pool on top only preempts the model's threads (measured on 2 cores: 7.4 -> 8.9 fps for ESPCN x2
    with one x264 thread). A quarter of the cores keeps a many-core machine's encoder from becoming the
    bottleneck at 4K (not measured: this project has only 2 cores)."""
    return max(1, cores // 4)


def upscale_video(
    input: str | Path,
    output: str | Path | None = None,
    *,
    model: str | Path = "espcn-x2",
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | Literal["auto"] = 4,
    tile: int | None = None,
    tile_pad: int = 16,
    max_memory: float | None = None,
    compile: bool = False,
    encoder: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    encoder_options: dict[str, str] | None = None,
    overwrite: bool = False,
    skip_errors: bool = False,
    hwdec: str | None = None,
    progress: ProgressCallback | bool | None = None,
    cancel: threading.Event | None = None,
    upscaler: Upscaler | None = None,
    strength: float | None = None,
) -> Path:
    """Upscale one video (or image) file; returns the output path.

    The output keeps every stream, timestamp, colour tag, SAR and rotation of the input (see the module
    docs); `progress=True` shows a tqdm bar on stderr, a callable receives `Progress` updates; setting
    `cancel` stops the job with `Cancelled`. Nothing is left at `output` unless the job succeeds.
    `hwdec` decodes on a device (e.g. "cuda" for NVDEC), falling back to software when it cannot.
    `strength` interpolates a GAN model with its PSNR model (see `load_model`).
    """
    input_path = Path(input)
    info = probe(input_path)
    if info.video.interlaced:
        log.warning("%s: interlaced; the engine upscales whole frames, which magnifies combing: deinterlace "
                    "first (FFmpeg's bwdif filter, or QTGMC in a VapourSynth script)", input_path.name)
    upscaler = upscaler or Upscaler(model, device=device, precision=precision, tile=tile, tile_pad=tile_pad,
                                    max_memory=max_memory, compile=compile, strength=strength)
    output_path = Path(output) if output is not None else default_output(input_path, upscaler.scale)
    if output_path.is_dir():  # like cp: into the folder, under the input's name
        output_path /= output_name(input_path)
    check_output(input_path, output_path, overwrite)
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch size must be a whole number of at least 1 or 'auto' (got {batch_size!r})")
    image_encoder = IMAGE_ENCODERS.get(output_path.suffix.lower())
    threads = cpu_encoder_threads(os.cpu_count() or 1) if upscaler.device.type == "cpu" else None
    settings = EncodeSettings(encoder or image_encoder, crf, preset, pix_fmt, dict(encoder_options or {}),
                              threads)
    with temporary_output(output_path) as tmp:
        source = Source(info.path, skip_errors=skip_errors, hwdec=hwdec)
        _run(info, source, tmp, "image2" if image_encoder else None, upscaler, settings, batch_size, progress, cancel)
    return output_path


def _run(info: MediaInfo, source: Source, tmp: Path, container_format: str | None, upscaler: Upscaler,
         settings: EncodeSettings, batch_size: int | Literal["auto"], progress: ProgressCallback | bool | None,
         cancel: threading.Event | None) -> None:
    video, scale = info.video, upscaler.scale
    failed = threading.Event()

    def stopping() -> bool:
        return failed.is_set() or (cancel is not None and cancel.is_set())

    close_report: Callable[[], None] = lambda: None  # noqa: E731
    sink: Sink | None = None
    stages: list[_Stage] = []
    finished = False
    try:
        sink = Sink(tmp, container_format, source.container, video, video.width * scale, video.height * scale,
                    settings)
        out_layout = plane_layout(working_format(sink.pix_fmt, alpha=True))
        layout = plane_layout(working_format(video.pix_fmt, alpha=out_layout.has_alpha))  # alpha only if kept
        if batch_size == "auto":
            batch_size = upscaler.auto_batch_size(layout, video.color, video.width, video.height, out_layout,
                                                  sink.color)
            log.warning("batch size %d (auto)", batch_size)
        frames, encoded = _Channel(2 * batch_size, stopping), _Channel(4 * batch_size + 64, stopping)
        runner = BatchRunner(upscaler, layout, video.color, out_layout, sink.color, batch_size)
        stages = _start_stages(source, sink, frames, encoded, failed, layout.has_alpha)
        report, close_report = _progress_reporter(progress, info)
        start, done = time.monotonic(), 0
        first_time: float | None = None
        last_time = 0.0
        for items, planes in runner.run(_batches(frames, batch_size)):
            for item, frame_planes in zip(items, planes, strict=True):
                frame_planes = crop_planes(frame_planes, out_layout, sink.width, sink.height)
                encoded.put((planes_to_frame(frame_planes, out_layout.pix_fmt), item.pts, item.time_base))
            done += len(items)
            if first_time is None:
                first_time = float(items[0].pts * items[0].time_base)
            last_time = float(items[-1].pts * items[-1].time_base)
            report(Progress(done, video.estimated_frames, time.monotonic() - start))
        _warn_if_short(info, last_time - (first_time or 0.0))
        encoded.put(_END)
        stages[1].join()
        finished = stages[1].error is None
    except _Stopped:
        pass
    finally:
        if not finished:
            failed.set()
        for stage in stages:
            stage.join()
        close_report()
        source.close()
        if sink is not None and not finished:
            sink.abort()
    errors = [s.error for s in stages if s.error is not None]
    if errors:
        raise errors[0]
    if not finished:
        raise Cancelled("cancelled; no output written")


def _warn_if_short(info: MediaInfo, span: float) -> None:
    """A download cut short still demuxes cleanly up to the cut: compare the time the frames span with the
    length the file declares (a second of slack: audio may run on past the last frame)."""
    video = info.video
    if video.duration is None or info.is_image:
        return
    frame = 1 / float(video.frame_rate) if video.frame_rate else 0.1
    if span + max(1.0, 2 * frame) < video.duration:
        log.warning("%s: the video stops %.2f s in, but the file declares %.2f s; it may be truncated",
                    info.path.name, span, video.duration)


def _start_stages(source: Source, sink: Sink, frames: _Channel, encoded: _Channel,
                  failed: threading.Event, alpha: bool) -> list[_Stage]:
    """Start the decode and encode threads; returns them in that order."""
    passthrough = sink.passthrough_indices

    def decode() -> None:
        source.run(frames.put, encoded.put, passthrough, alpha)
        frames.put(_END)

    def encode() -> None:
        for item in encoded.drain():
            if isinstance(item, tuple):
                sink.write_frame(*item)
            else:
                sink.write_packet(item)
        sink.close()

    stages = [_Stage("decode", decode, failed), _Stage("encode", encode, failed)]
    for stage in stages:
        stage.start()
    return stages
