"""upscale_video(): source thread -> batches -> runner (calling thread) -> sink thread.

Stages talk through bounded queues, so memory does not grow with the length of the video. The first
error in any stage stops every stage and is re-raised in the caller; Ctrl-C and a cancel event do the
same. Output goes to a temporary file beside the target that is renamed only once it is complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import heapq
import inspect
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vidsr.compute.runner import Batch, BatchRunner
from vidsr.compute.upscaler import BatchSize, Upscaler
from vidsr.errors import Cancelled, DecodeError, InputError, OutputError
from vidsr.formats import PlaneLayout
from vidsr.media.chunks import Chunk, keyframe_times, plan_chunks, resolve_chunk_seconds
from vidsr.media.frames import crop_planes, plane_layout, planes_to_frame, working_format
from vidsr.media.holds import HeldFrames, ReuseHeld, held_frames_note, reuse_threshold
from vidsr.media.info import MediaInfo, is_image_demuxer, open_container, probe
from vidsr.media.lost import LostFrames
from vidsr.media.sink import AUDIO_MODES, EncodeSettings, Sink, chunk_encoding
from vidsr.media.source import DecodedFrame, Source
from vidsr.media.stamps import UNTRUSTED_PTS, parse_rate
from vidsr.media.workfolder import WorkFolder, input_fingerprint, unchunked_run

log = logging.getLogger("vidsr")

IMAGE_ENCODERS = {".png": "png", ".jpg": "mjpeg", ".jpeg": "mjpeg", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
                  ".webp": "libwebp", ".ppm": "ppm", ".pgm": "pgm", ".pam": "pam", ".tga": "targa", ".dpx": "dpx",
                  ".qoi": "qoi", ".sgi": "sgi"}
_END = object()


@dataclass(frozen=True)
class Progress:
    """Frames written so far, the expected total (None when unknown), seconds since the start, how many of
    the frames written were held frames that reused the output before them instead of the model, and how many
    an earlier run had written (a resumed chunked job's finished chunks: in `frames`, not in the rate)."""

    frames: int
    total: int | None
    elapsed: float
    reused: int = 0
    resumed: int = 0

    @property
    def fps(self) -> float:
        return (self.frames - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

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


def output_name(input_path: Path, tag: str = "") -> str:
    """The output file's name for `input_path`: its stem, `tag`, and its suffix, or .mp4 for inputs whose own
    format cannot hold the upscaled result: GIF (a 256-colour palette) and animated PNG / WebP (vidsr writes
    one picture to a picture file)."""
    suffix = input_path.suffix
    if suffix.lower() == ".gif" or (suffix.lower() in IMAGE_ENCODERS and _is_animation(input_path)):
        suffix = ".mp4"
    return f"{input_path.stem}{tag}{suffix}"


def _is_animation(path: Path) -> bool:
    """FFmpeg reads an animated PNG or WebP with a video demuxer (apng, webp_anim), a still one as a picture."""
    try:
        with av.open(str(path)) as container:
            return not is_image_demuxer(container.format.name)
    except (av.FFmpegError, OSError):
        return False  # the upscale itself reports what is wrong with the file


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
def temporary_output(output: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside `output`, renamed onto it only when the block succeeds, removed otherwise.

    Partial files that a killed run (SIGKILL, out of memory, power loss) could not remove are removed here.
    Without `overwrite` a target that another run is writing is refused, and one that appears while this run
    works is not replaced: the rename refuses an existing target atomically.
    """
    writers = _remove_stale_partials(output)
    if writers and not overwrite:
        raise OutputError(f"{output}: another vidsr run (process {writers[0]}) is writing it; wait for it to finish "
                          "or use --overwrite")
    tmp = output.with_name(f"{_partial_prefix(output)}{os.getpid()}{output.suffix}")
    try:
        yield tmp
        _publish(tmp, output, overwrite)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:  # a read-only filesystem: the error that got us here is the one to report
            if tmp.exists():  # (it refuses even to remove a file that is not there)
                log.warning("%s: could not remove the partial file (%s)", tmp, exc.strerror or exc)


def _publish(tmp: Path, output: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, output)
        return
    try:
        os.link(tmp, output)  # unlike a rename, fails if `output` exists
        return
    except FileExistsError:
        pass
    except OSError:  # no hard links here (FAT, some network shares): check, then rename
        if not output.exists():
            os.replace(tmp, output)
            return
    raise OutputError(f"{output}: appeared while this run worked (another run?); kept, and this run's result "
                      "discarded (use --overwrite to replace it)")


def _partial_prefix(output: Path) -> str:
    """Temporary files for `output` are named <prefix><pid><suffix>."""
    return f".{output.stem}.partial-"


def _remove_stale_partials(output: Path) -> list[int]:
    """Remove the partial files of `output` whose process has gone; returns the processes still writing it."""
    prefix, writers = _partial_prefix(output), []
    for partial in output.parent.glob(f"{glob.escape(prefix)}*{glob.escape(output.suffix)}"):
        pid = partial.name[len(prefix):len(partial.name) - len(output.suffix)]
        if not pid.isdigit():
            continue
        if _process_exists(int(pid)):
            writers.append(int(pid))
        else:
            with contextlib.suppress(OSError):  # a leftover that cannot go (read-only now) must not stop the run
                partial.unlink(missing_ok=True)
    return writers


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class _Held:
    """A held frame (see vidsr/media/holds.py): written as the picture before it, under its own time."""

    pts: int
    time_base: Fraction


def _batches(frames: _Channel, size: int, holds: HeldFrames | None,
             order: deque[DecodedFrame | _Held]) -> Iterator[Batch]:
    """Batches of the frames to upscale. Every frame, held or not, goes into `order` as it comes (see
    `_Writer`); a held frame is not batched, so it never waits in a batch nor takes a place there."""
    batch: list[DecodedFrame] = []
    for frame in frames.drain():
        if holds is not None and holds.held(frame.planes):
            order.append(_Held(frame.pts, frame.time_base))  # its planes are let go now
            continue
        order.append(frame)
        batch.append(frame)
        if len(batch) == size:
            yield Batch([f.planes for f in batch], batch)
            batch = []
    if batch:
        yield Batch([f.planes for f in batch], batch)


class _Writer:
    """Hands the frames to the encode stage in decode order, a held frame as the picture it repeats.

    The runner hands back the upscaled frames in order, and `_batches` has put every frame into `order` by the
    time it batches the next one to upscale; so the held frames in front of an upscaled one follow the one
    before it and are written first, and those left after the last one are written by `finish`."""

    def __init__(self, encoded: _Channel, layout: PlaneLayout, width: int, height: int) -> None:
        self.encoded, self.layout, self.width, self.height = encoded, layout, width, height
        self.order: deque[DecodedFrame | _Held] = deque()
        self.frames = self.reused = 0
        self.times: tuple[float, float] | None = None  # of the first frame and the last one written
        self._picture: av.VideoFrame | None = None

    def upscaled(self, item: DecodedFrame, planes: list) -> None:
        self.finish()
        self.order.popleft()  # `item` itself
        planes = crop_planes(planes, self.layout, self.width, self.height)
        self._picture = planes_to_frame(planes, self.layout.pix_fmt)
        self._put(item.pts, item.time_base)

    def finish(self) -> None:
        """Write the held frames that have come since the last upscaled frame."""
        while self.order and isinstance(self.order[0], _Held):
            held = self.order.popleft()
            self._put(held.pts, held.time_base)
            self.reused += 1

    def _put(self, pts: int, time_base: Fraction) -> None:
        # A picture may go several times: the sink sets its pts just before each encode, and an encoder keeps
        # its own reference to what it is given, so a later pts does not reach an earlier frame.
        self.encoded.put((self._picture, pts, time_base))
        self.frames += 1
        seconds = float(pts * time_base)
        self.times = (self.times[0] if self.times else seconds, seconds)


def _progress_reporter(progress: ProgressCallback | bool | None, info: MediaInfo,
                       resumed: int = 0) -> tuple[ProgressCallback, Callable]:
    """A callback for the chosen kind of progress report, and a function that closes it (completed: bool);
    the bar starts at `resumed` frames, which its rate does not count."""
    if callable(progress):
        return progress, lambda completed: None
    if not progress or info.is_image:  # a single picture: no frames to count
        return lambda p: None, lambda completed: None
    bar = tqdm(total=info.video.estimated_frames, initial=resumed, unit="frame", desc=info.path.name,
               dynamic_ncols=True, leave=True)
    notices = contextlib.ExitStack()
    notices.enter_context(logging_redirect_tqdm())  # notices print above the bar instead of into its line

    def report(p: Progress) -> None:
        if bar.total is not None and p.frames > bar.total:
            bar.total = None  # the estimate was short: fall back to a count without ETA
        if p.reused:
            bar.set_postfix_str(held_frames_note(p.reused), refresh=False)
        bar.update(p.frames - bar.n)

    def close(completed: bool) -> None:
        if completed:  # an estimated total was only an estimate: end the bar at what was done
            bar.total = bar.n  # (a failed run's bar stays where it stopped)
        bar.close()
        notices.close()

    return report, close


def cpu_encoder_threads(cores: int) -> int:
    """Encoder threads beside a model running on the CPU, which already keeps every core busy. Two on a 2-core
    machine: with the heap kept warm (vidsr/compute/heap.py) a second x264 thread overlaps the model's idle moments
    (ESPCN x2 640x360, 120 frames: 10.3-11.1 s against 10.7-12.3 s with one, four alternating pairs; one had
    won before the heap fix, 8.9 against 7.4 fps). A quarter of the cores keeps a many-core machine's encoder
    from becoming the bottleneck at 4K without preempting the model (not measured: this project has 2 cores)."""
    return min(cores, max(2, cores // 4))


def upscale_video(
    input: str | Path,
    output: str | Path | None = None,
    *,
    model: str | Path | Sequence[str | Path] = "espcn-x2",
    device: str = "auto",
    precision: str = "auto",
    batch_size: BatchSize = None,
    tile: int | None = None,
    tile_pad: int = 16,
    max_memory: float | None = None,
    compile: bool = False,
    encoder: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
    encoder_options: dict[str, str] | None = None,
    audio: Literal["copy", "reencode", "drop"] = "copy",
    overwrite: bool = False,
    skip_errors: bool = False,
    hwdec: str | None = None,
    progress: ProgressCallback | bool | None = None,
    cancel: threading.Event | None = None,
    upscaler: Upscaler | None = None,
    strength: float | None = None,
    chunk_seconds: float | None = None,
    resume: bool = True,
    reuse_held: ReuseHeld = True,
    assume_fps: str | float | Fraction | None = None,
) -> Path:
    """Upscale one video (or image) file; returns the output path.

    The output keeps every stream, timestamp, colour tag, SAR and rotation of the input (see the module
    docs); `progress=True` shows a tqdm bar on stderr, a callable receives `Progress` updates; setting
    `cancel` stops the job with `Cancelled`. Nothing is left at `output` unless the job succeeds.
    `hwdec` decodes on a device (e.g. "cuda" for NVDEC), falling back to software when it cannot.
    `strength` interpolates a GAN model with its PSNR model (see `load_model`).
    `audio` copies audio streams ("copy", re-encoding what the container cannot hold), re-encodes them
    all to the container's default codec ("reencode") or leaves them out ("drop").
    `chunk_seconds` cuts the video into chunks of about that length at keyframes, kept in a work folder
    beside the output so that a rerun resumes (`resume=False` starts afresh); None: 60 s for inputs longer
    than 5 minutes, else off; 0: off. See `ChunkedJob`.
    `reuse_held`: a frame that repeats the last one upscaled reuses its output instead of the model, under its
    own pts. True (the default): exact repeats only, which changes no picture; a number: frames within that
    many 8-bit levels in every sample of every plane (`vidsr.media.NOISE_LEVELS`, 1, takes in the codec noise
    that measurement showed motion stays above; vidsr/media/holds.py); False: every frame through the model.
    `assume_fps` (a number, or a fraction such as "24000/1001") takes the video as constant-rate at that rate
    and stamps its frames in order, whatever their timestamps (FFmpeg's input -r): for files whose frames all
    carry one timestamp. Such a run is not cut into chunks.
    """
    reuse = reuse_threshold(reuse_held)
    info = assume_rate(probe_input(Path(input)), assume_fps)
    upscaler = given_or_new_upscaler(upscaler, model=model, device=device, precision=precision, tile=tile,
                                     tile_pad=tile_pad, max_memory=max_memory, compile=compile, strength=strength)
    output_path, settings, image_encoder = plan_output(info, output, upscaler, encoder=encoder, crf=crf,
                                                       preset=preset, pix_fmt=pix_fmt, audio=audio,
                                                       encoder_options=encoder_options, overwrite=overwrite)
    if batch_size not in ("auto", None) and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch size must be a whole number of at least 1 or 'auto' (got {batch_size!r})")
    seconds = 0.0 if image_encoder or info.is_image else resolve_chunk_seconds(chunk_seconds, info.video.duration)
    if seconds and assume_fps is not None:
        log.warning("%s: --assume-fps numbers the frames in order, which chunks cannot share; upscaled in one "
                    "piece, without resuming", info.path.name)
        seconds = 0.0
    job = (ChunkedJob.plan(info, output_path, upscaler, settings, seconds, resume, skip_errors, hwdec, overwrite,
                           reuse) if seconds else None)
    if job:
        job.run_here(upscaler, batch_size, progress, cancel)
        return output_path
    with unchunked_run(output_path), temporary_output(output_path, overwrite) as tmp:
        source = Source(info.path, skip_errors=skip_errors, hwdec=hwdec,
                        assume_fps=None if assume_fps is None else info.video.frame_rate)
        _run(info, source, tmp, "image2" if image_encoder else None, upscaler, settings, batch_size, progress, cancel,
             reuse=reuse)
    return output_path


def given_or_new_upscaler(upscaler: Upscaler | None, **model_settings: object) -> Upscaler:
    """The caller's loaded `upscaler` (then model settings would be ignored: refused rather than run another
    model), or a new one built from the settings."""
    if upscaler is None:
        return Upscaler(**model_settings)
    given = [name for name, value in model_settings.items() if value != _MODEL_DEFAULTS[name]]
    if given:
        raise InputError(f"upscaler= holds a loaded model with its settings; leave out {', '.join(given)} "
                         "(or build the Upscaler with them)")
    return upscaler


_MODEL_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(upscale_video).parameters.items()}


def assume_rate(info: MediaInfo, rate: str | float | Fraction | None) -> MediaInfo:
    """`info` with the video taken as constant-rate at `rate` (validated; None: as it is), in a time base of one
    frame."""
    try:
        fps = parse_rate(rate)
    except ValueError as exc:
        raise InputError(f"assume_fps: {exc}") from None
    if fps is None or info.is_image:
        return info
    return replace(info, video=replace(info.video, frame_rate=fps, average_rate=fps, time_base=1 / fps))


def probe_input(path: Path) -> MediaInfo:
    info = probe(path)
    if info.video.interlaced:
        log.warning("%s: interlaced; the engine upscales whole frames, which magnifies combing: deinterlace "
                    "first (FFmpeg's bwdif filter, or QTGMC in a VapourSynth script)", path.name)
    return info


def plan_output(info: MediaInfo, output: str | Path | None, upscaler: Upscaler, *, encoder: str | None = None,
                crf: int | None = None, preset: str | None = None, pix_fmt: str | None = None,
                encoder_options: dict[str, str] | None = None, audio: str = "copy",
                overwrite: bool = False) -> tuple[Path, EncodeSettings, str | None]:
    """The checked output path, the encoder settings, and the image encoder when the output is a picture."""
    output_path = Path(output) if output is not None else default_output(info.path, upscaler.scale)
    if output_path.is_dir():  # like cp: into the folder, under the input's name
        output_path /= output_name(info.path)
    check_output(info.path, output_path, overwrite)
    image_encoder = IMAGE_ENCODERS.get(output_path.suffix.lower())
    threads = cpu_encoder_threads(os.cpu_count() or 1) if upscaler.device.type == "cpu" else None
    if audio not in AUDIO_MODES:
        raise InputError(f"audio must be one of {', '.join(AUDIO_MODES)} (got {audio!r})")
    settings = EncodeSettings(encoder or image_encoder, crf, preset, pix_fmt, dict(encoder_options or {}),
                              threads, audio)
    return output_path, settings, image_encoder


def _run(info: MediaInfo, source: Source, tmp: Path, container_format: str | None, upscaler: Upscaler,
         settings: EncodeSettings, batch_size: BatchSize, progress: ProgressCallback | bool | None,
         cancel: threading.Event | None, chunk_headers: bool | None = None, reuse: float | None = None) -> int:
    """Upscale `source` into `tmp`; returns the frame count. With `chunk_headers` set, `tmp` is one chunk of
    a chunked job (see `Sink`). `reuse`: the held-frame threshold (`reuse_threshold`), None for none."""
    video, scale = info.video, upscaler.scale
    failed = threading.Event()

    def stopping() -> bool:
        return failed.is_set() or (cancel is not None and cancel.is_set())

    close_report: Callable[[bool], None] = lambda completed: None  # noqa: E731
    sink: Sink | None = None
    stages: list[_Stage] = []
    finished = False
    try:
        sink = Sink(tmp, container_format, source.container, video, video.width * scale, video.height * scale,
                    settings, chunk_headers=chunk_headers, skip_errors=source.skip_errors)
        out_layout = plane_layout(working_format(sink.pix_fmt, alpha=True))
        layout = plane_layout(working_format(video.pix_fmt, alpha=out_layout.has_alpha))  # alpha only if kept
        requested, batch_size = batch_size, upscaler.batch_size(batch_size, layout, video.color, video.width,
                                                                video.height, out_layout, sink.color)
        if requested == "auto":
            log.warning("batch size %d (auto)", batch_size)
        frames, encoded = _Channel(2 * batch_size, stopping), _Channel(4 * batch_size + 64, stopping)
        runner = BatchRunner(upscaler, layout, video.color, out_layout, sink.color, batch_size,
                             one_picture=info.is_image)
        stages = _start_stages(source, sink, frames, encoded, failed, layout.has_alpha)
        report, close_report = _progress_reporter(progress, info)
        start = time.monotonic()
        writer = _Writer(encoded, out_layout, sink.width, sink.height)
        holds = HeldFrames(reuse, layout.bit_depth) if reuse is not None else None
        for items, planes in runner.run(_batches(frames, batch_size, holds, writer.order)):
            for item, frame_planes in zip(items, planes, strict=True):
                writer.upscaled(item, frame_planes)
            report(Progress(writer.frames, video.estimated_frames, time.monotonic() - start, writer.reused))
        writer.finish()
        report(Progress(writer.frames, video.estimated_frames, time.monotonic() - start, writer.reused))
        if chunk_headers is None:
            _warn_if_short(info, writer.times[1] - writer.times[0] if writer.times else 0.0)
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
        close_report(finished)
        source.close()
        if sink is not None and not finished:
            sink.abort()
    errors = [s.error for s in stages if s.error is not None]
    if errors:
        raise errors[0]
    if not finished:
        raise Cancelled("cancelled; no output written")
    return writer.frames


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


def upscale_chunk(info: MediaInfo, chunk: Chunk, target: Path, upscaler: Upscaler, settings: EncodeSettings,
                  batch_size: BatchSize, chunk_headers: bool, *, data: bytes | None = None,
                  skip_errors: bool = False, hwdec: str | None = None, progress: ProgressCallback | None = None,
                  cancel: threading.Event | None = None, reuse: float | None = None) -> tuple[int, dict[str, list]]:
    """One chunk, one engine run: its frames from the input file (or from its packets, `data`) into `target`.
    Returns the frame count and the frames lost (`LostFrames.spans`: the job reports them all at the end).
    `reuse`: the held-frame threshold; a chunk's first frame is upscaled whatever came before it."""
    source = Source(info.path, skip_errors=skip_errors, hwdec=hwdec, pts_range=chunk.pts_range(seek=data is None),
                    data=data, time_base=info.video.time_base, ordered=info.container in UNTRUSTED_PTS)
    frames = _run(info, source, target, None, upscaler, settings, batch_size, progress, cancel, chunk_headers,
                  reuse)
    return frames, source.lost.spans


def model_identity(upscaler: Upscaler) -> dict[str, Any]:
    """What makes the model's output what it is: architecture, scale, weights, precision, tiling."""
    digest = hashlib.sha256()
    for name, tensor in upscaler.descriptor.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"arch": upscaler.descriptor.arch, "scale": upscaler.scale, "weights_sha256": digest.hexdigest(),
            "dtype": str(upscaler.dtype), "tile": upscaler.tile, "tile_pad": upscaler.tile_pad}


class ChunkedJob:
    """One output made of chunks cut at the input's keyframes: each chunk is one engine run (here, or on a
    Ray worker: `vidsr.jobs.distributed`), kept in a `WorkFolder` so a rerun resumes, and the chunks are joined
    by stream copy with the input's other streams muxed in once, by the same `Sink` as a single run."""

    def __init__(self, info: MediaInfo, output: Path, chunks: list[Chunk], settings: EncodeSettings,
                 chunk_headers: bool, work: WorkFolder, skip_errors: bool = False, hwdec: str | None = None,
                 overwrite: bool = False, reuse: float | None = None) -> None:
        self.info, self.output, self.chunks, self.settings, self.work = info, output, chunks, settings, work
        self.chunk_headers, self.skip_errors, self.hwdec, self.overwrite = chunk_headers, skip_errors, hwdec, overwrite
        self.reuse = reuse

    @classmethod
    def plan(cls, info: MediaInfo, output: Path, upscaler: Upscaler, settings: EncodeSettings, seconds: float,
             resume: bool = True, skip_errors: bool = False, hwdec: str | None = None,
             overwrite: bool = False, reuse: float | None = None) -> ChunkedJob | None:
        """Chunks of about `seconds` (0: the whole video as one chunk); None, with a notice, when the video has
        no timestamps to cut by or the output's codec no packets to keep. `skip_errors`, `hwdec` and
        `overwrite` as for `upscale_video`; `reuse` the held-frame threshold (`reuse_threshold`)."""
        encoding = chunk_encoding(output.suffix, settings.encoder)
        if encoding is None:
            log.warning("%s: %s files hold raw frames, which chunks cannot keep; upscaled in one piece, without "
                        "resuming", info.path.name, output.suffix)
            return None
        keyframes = keyframe_times(info.path)
        if keyframes is None:
            log.warning("%s: no timestamps (an elementary stream); upscaled in one piece, without resuming",
                        info.path.name)
            return None
        encoder, chunk_headers = encoding
        settings = replace(settings, encoder=encoder)  # a single run's choice for the output's format
        chunks = plan_chunks(keyframes, info.video.time_base, seconds)
        identity = {"input": input_fingerprint(info.path), "output": output.suffix.lower(),
                    # the audio is muxed at the join: it does not change the chunks
                    "settings": {**asdict(settings), "threads": None, "audio": None, "skip_errors": skip_errors,
                                 # exact reuse (0) or none gives the same pictures: only a threshold changes them
                                 **({"reuse_held": reuse} if reuse else {})},
                    "model": model_identity(upscaler)}
        work = WorkFolder(output, identity, chunks, resume)
        return cls(info, output, chunks, settings, chunk_headers, work, skip_errors, hwdec, overwrite, reuse)

    @property
    def total_frames(self) -> int | None:
        return self.info.video.estimated_frames

    def pending(self) -> list[Chunk]:
        return [self.chunks[i] for i in self.work.pending()]

    def store(self, chunk: Chunk, data: bytes, frames: int, lost: dict[str, list]) -> None:
        """A chunk computed elsewhere (its file's bytes)."""
        partial = self.work.partial_path(chunk.index)
        partial.write_bytes(data)
        self.work.finish(chunk.index, partial, frames, lost)

    def run_here(self, upscaler: Upscaler, batch_size: BatchSize, progress: ProgressCallback | bool | None,
                 cancel: threading.Event | None) -> None:
        """Every pending chunk in this process, one after another, then the join."""
        self.run_chunks(upscaler, batch_size, progress, cancel)
        self.join()

    def run_chunks(self, upscaler: Upscaler, batch_size: BatchSize,
                   progress: ProgressCallback | bool | None, cancel: threading.Event | None) -> None:
        """Every pending chunk in this process; the work folder stays open (locked) when they succeed."""
        resumed = self.work.frames()
        report, close_report = _progress_reporter(progress, self.info, resumed)
        start, base = time.monotonic(), resumed
        reused = chunk_reused = 0  # held frames reused: by the chunks done in this run, by the current one
        completed = False
        try:
            for chunk in self.pending():
                def chunk_report(p: Progress, base: int = base, reused: int = reused) -> None:
                    nonlocal chunk_reused
                    chunk_reused = p.reused
                    report(Progress(base + p.frames, self.total_frames, time.monotonic() - start, reused + p.reused,
                                    resumed))

                partial = self.work.partial_path(chunk.index)
                frames, lost = upscale_chunk(self.info, chunk, partial, upscaler, self.settings, batch_size,
                                             self.chunk_headers, skip_errors=self.skip_errors, hwdec=self.hwdec,
                                             progress=chunk_report, cancel=cancel, reuse=self.reuse)
                self.work.finish(chunk.index, partial, frames, lost)
                base += frames
                reused += chunk_reused
            completed = True
        except BaseException as exc:
            self.work.clear_stale()  # the half-written chunk goes; the finished ones stay for the next run
            if self.work.done() or not isinstance(exc, Exception) or isinstance(exc, Cancelled):
                self.work.close()
            else:  # a failure before any chunk (a model that fails on its first frame): leave nothing behind
                self.work.remove()
            raise
        finally:
            close_report(completed)

    def join(self) -> None:
        """Join the finished chunks into the output, then remove the work folder. The output was checked
        against --overwrite when the job began; it is replaced only once complete."""
        if not self.work.frames():
            self.work.close()
            raise DecodeError(f"{self.info.path}: no video frame could be decoded")
        lost = LostFrames()
        for spans in self.work.lost():
            lost.merge(spans)
        lost.report(self.info.path.name)
        try:
            with temporary_output(self.output, self.overwrite) as tmp:
                self._join_into(tmp)
        finally:
            self.work.close()
        self.work.remove()

    def _join_into(self, tmp: Path) -> None:
        # a chunk that lost every frame (--skip-errors) holds a header only, which no demuxer reads
        files = [self.work.chunk_path(c.index) for c in self.chunks if self.work.frames(c.index)]
        with open_container(self.info.path) as source, open_container(files[0]) as first:
            sink = Sink(tmp, None, source, self.info.video, 0, 0, self.settings, copy_video=first.streams.video[0],
                        skip_errors=self.skip_errors)
            try:
                streams = [s for s in source.streams if s.index in sink.passthrough_indices]
                others = ((p, False) for p in source.demux(streams) if p.size) if streams else iter(())
                video = ((p, True) for p in _video_packets(files))
                times: list[float] = []
                for packet, is_chunk in heapq.merge(others, video, key=lambda item: _packet_seconds(item[0])):
                    if is_chunk:
                        times.append(float(packet.pts * packet.time_base))
                        sink.write_video_packet(packet)
                    else:
                        sink.write_packet(packet)
                sink.close()
                _warn_if_short(self.info, max(times) - min(times))
            except BaseException:
                sink.abort()
                raise


def _video_packets(files: list[Path]) -> Iterator[av.Packet]:
    """The chunks' packets in decode order (the sink keeps their dts increasing across chunks).

    NUT keeps no negative dts (a B-frame encoder's first packets at pts 0), so a chunk's first packets come
    back without one: they are rebuilt as the encoder makes them, the display-order pts shifted back by its
    reordering delay, found in the chunk's first packets that have a dts, or for a chunk too short to have
    any (its last GOP of one or two frames) the previous chunk's: one encoder, one delay."""
    delay: int | None = None
    for path in files:
        with open_container(path) as chunk:
            packets = (p for p in chunk.demux(chunk.streams.video[0]) if p.size)
            head = list(itertools.islice(packets, _REORDER_WINDOW))
            delay = _reorder_delay(head) if any(p.dts is not None for p in head) else delay
            if delay is not None:
                shown = sorted(p.pts for p in head)
                for packet, pts in zip(head, shown, strict=True):
                    if packet.dts is not None:
                        break
                    packet.dts = pts - delay
            yield from head
            yield from packets


_REORDER_WINDOW = 32  # packets: far more than any encoder's reordering depth


def _reorder_delay(head: list[av.Packet]) -> int:
    """The encoder's reordering delay in ticks: the first packet with a dts has it this far below the pts
    shown in its place."""
    known = next(i for i, p in enumerate(head) if p.dts is not None)
    return sorted(p.pts for p in head)[known] - head[known].dts


def _packet_seconds(packet: av.Packet) -> float:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return float(stamp * packet.time_base) if stamp is not None and packet.time_base else 0.0
