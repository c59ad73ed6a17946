"""Source stage: demux and decode on its own thread.

Video frames keep their pts and time base; packets of the other streams are handed on untouched so the
sink can remux them. Decode errors stop the job with the frame index, or are skipped with `skip_errors`.
Frames whose timestamps repeat or go back are dropped (no muxer takes them); every frame the output lacks,
for either reason or because the demuxer skipped a damaged stretch, is reported with its count and times.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.hwaccel import HWAccel
from av.video.frame import PictureType

from vidsr.errors import DecodeError
from vidsr.media.frames import frame_to_planes
from vidsr.media.info import ffmpeg_reason, open_container
from vidsr.media.lost import LostFrames

log = logging.getLogger("vidsr")


@dataclass
class DecodedFrame:
    index: int
    pts: int
    time_base: Fraction
    planes: list[np.ndarray]
    frame: av.VideoFrame  # owns the buffers `planes` view


@dataclass(frozen=True)
class PtsRange:
    """The frames of one chunk: pts in [start, end), None meaning open. Decoding begins at the keyframe at or
    before `seek` (the keyframe before the chunk's own, so that an open GOP's first frames have their
    references); None decodes from the beginning."""

    start: int | None
    end: int | None
    seek: int | None = None

    def before_start(self, pts: int | None) -> bool:
        return self.start is not None and pts is not None and pts < self.start

    def past_end(self, pts: int) -> bool:
        return self.end is not None and pts >= self.end


class Source:
    """Decodes the first video stream of `path`, demuxing the streams in `passthrough` alongside it.

    With `pts_range` only that range's frames come out (no other streams); `data` is then the range's packets
    in a NUT container (see `vidsr.media.chunks.chunk_packets`) instead of the file at `path`, whose time base
    NUT may have changed: pts are given (and `pts_range` read) in `time_base`, the input's.
    """

    def __init__(self, path: str | Path, skip_errors: bool = False, hwdec: str | None = None,
                 pts_range: PtsRange | None = None, data: bytes | None = None,
                 time_base: Fraction | None = None) -> None:
        self.path = Path(path)
        self.skip_errors = skip_errors
        self.pts_range = pts_range
        self.container, self.video = self._open(hwdec, data, strict=True)
        self.lost = LostFrames()
        # Elementary streams (.h264, .hevc) carry no timestamps: missing ones follow the previous frame at the
        # stream's frame rate, in its time base.
        rate = self.video.guessed_rate or self.video.average_rate or 25
        self._time_base = Fraction(self.video.time_base or Fraction(1, 1000))
        self._pts_scale = self._time_base / time_base if time_base is not None else Fraction(1)
        self._time_base = time_base or self._time_base
        self._frame_step = max(1, round(1 / (Fraction(rate) * self._time_base)))
        self._last_pts: int | None = None
        # Where the first frame should be: the range's start, else the first keyframe packet's or the first
        # undecodable packet's (a damaged first GOP can decode to nothing, and that loss is reported like any
        # other gap; the frames before a stream's first keyframe, as in a capture cut mid-GOP, are not a loss).
        self._first_pts = pts_range.start if pts_range is not None else None
        self._gaps = _Gaps(self._frame_step)
        # Under --skip-errors, a keyframe that did not decode leaves the frames decoded after it (by dts) up to
        # the next keyframe that decodes without their reference: [from, until), in the stream's time base.
        self._orphans_from: int | None = None
        self._orphans_until: int | None = None

    def _open(self, hwdec: str | None, data: bytes | None,
              strict: bool) -> tuple[av.container.InputContainer, av.VideoStream]:
        """The container and its first video stream, the decoder open: `strict`, it reports damage instead of
        silently concealing it, so that the job stops (or skips the frame) rather than upscaling garbage.

        Opened now, so that damaged decoder set-up data (H.264 / HEVC parameter sets in the file's header,
        which the strict decoder refuses) fails here as what it is; under --skip-errors such a stream is decoded
        without the strict checks, as players do."""
        if data is not None:
            container = av.open(io.BytesIO(data))
        else:
            container = _open_with_hwdec(self.path, hwdec) if hwdec else open_container(self.path)
        video = container.streams.video[0]
        video.codec_context.options = {"err_detect": _error_detection(video.codec_context.name, strict)}
        try:
            video.codec_context.open()
        except av.FFmpegError as exc:
            container.close()  # a decoder that failed to open cannot be opened again: start afresh
            if not strict:
                raise DecodeError(f"{self.path}: the video decoder does not start ({ffmpeg_reason(exc)})") from None
            if not self.skip_errors:
                raise DecodeError(f"{self.path}: the video stream's set-up data is damaged ({ffmpeg_reason(exc)}); "
                                  "use --skip-errors to decode it anyway") from None
            log.warning("%s: the video stream's set-up data is damaged (%s); decoding it without strict checks, "
                        "so damaged pictures may pass unnoticed", self.path.name, ffmpeg_reason(exc))
            return self._open(hwdec, data, strict=False)
        return container, video

    def close(self) -> None:
        self.container.close()

    def run(self, on_frame: Callable[[DecodedFrame], None], on_packet: Callable[[av.Packet], None],
            passthrough: Container[int], alpha: bool = False) -> None:
        """Feed every decoded video frame to `on_frame` (with its alpha plane when `alpha`) and every
        passthrough packet to `on_packet`."""
        streams = [self.video] + [s for s in self.container.streams if s.index in passthrough]
        index = 0
        size: tuple[int, int] | None = None
        try:
            for frame, pts in self._frames(streams, on_packet):
                if size is None:
                    size = (frame.width, frame.height)
                elif (frame.width, frame.height) != size:
                    raise DecodeError(f"{self.path}: picture size changes at {self._place(index, frame.pts)} "
                                      f"({size[0]}x{size[1]} -> {frame.width}x{frame.height}); not supported")
                on_frame(DecodedFrame(index, pts, self._time_base, frame_to_planes(frame, alpha), frame))
                index += 1
        except av.FFmpegError as exc:  # demuxer-level corruption
            raise DecodeError(f"{self.path}: cannot read past {self._place(index)} ({ffmpeg_reason(exc)})") from None
        self._gaps.report(self.lost, self._first_pts, self._seconds)
        # A chunk's losses are the job's to report, once, with the other chunks' (a chunk whose every frame
        # was lost under --skip-errors is one of them).
        if index == 0 and (self.pts_range is None or not self.lost.spans):
            raise DecodeError(f"{self.path}: no video frame could be decoded")
        if self.pts_range is None:
            self.lost.report(self.path.name)

    def _place(self, index: int, pts: int | None = None) -> str:
        """Where decoding stands, for messages: the frame number, or in a chunk the time (its frames are not
        numbered from the video's start): of the packet's `pts` (the stream's), else of the last frame out."""
        if self.pts_range is None:
            return f"frame {index}"
        at = next((t for t in (self._scaled(pts), self._last_pts, self.pts_range.start) if t is not None), 0)
        return f"{self._seconds(at):.2f} s"

    def _frames(self, streams: list[av.stream.Stream],
                on_packet: Callable[[av.Packet], None]) -> Iterator[tuple[av.VideoFrame, int]]:
        """Decoded video frames with their pts (those in `pts_range` only), passing other packets on."""
        span = self.pts_range
        for frame, pts in self._in_sequence(self._decoded(streams, on_packet)):
            if span is not None and span.past_end(pts):
                return  # frames come out in presentation order: the rest are later still (the next chunk's)
            if span is not None and span.before_start(pts):
                continue  # the previous chunk's, decoded as references: its gaps are counted there
            if self._follows(pts):
                yield frame, pts

    def _decoded(self, streams: list[av.stream.Stream],
                 on_packet: Callable[[av.Packet], None]) -> Iterator[tuple[av.VideoFrame, int]]:
        """Every video frame the decoder gives, with its pts, from the range's seek point on."""
        span = self.pts_range
        if span is not None and span.seek is not None:
            self.container.seek(span.seek, stream=self.video)
        decoded = 0
        for packet in self.container.demux(streams):
            if packet.stream.index != self.video.index:
                if packet.size:
                    on_packet(packet)
                continue
            # Frames before the range only give the range's frames their references: damage there is dropped.
            tolerate = span is not None and span.before_start(self._scaled(packet.pts))
            if self._first_pts is None and packet.is_keyframe:
                self._first_pts = self._scaled(packet.pts)
            for frame in self._decode(packet, decoded, tolerate):
                decoded += 1
                yield frame, self._frame_pts(frame)

    def _in_sequence(self, frames: Iterator[tuple[av.VideoFrame, int]]) -> Iterator[tuple[av.VideoFrame, int]]:
        """The frames less those whose timestamp leaps far ahead of the frames on both sides (damaged: a
        fragment's timestamps in a damaged MP4, say). Taken, such a frame made every later frame go back, and
        the gap broke the output. A leap of over a second (and ten frames) is held back until the next frame
        shows whether the stream goes on from there (a real gap) or from before it."""
        leap = max(round(1 / self._time_base), 10 * self._frame_step)
        latest: int | None = None  # the latest pts passed on
        held: tuple[av.VideoFrame, int] | None = None
        for frame, pts in frames:
            if held is not None and latest is not None:
                if pts <= latest:  # back even from before the leap: dropped as such, the leap still undecided
                    yield frame, pts
                    continue
                if pts < held[1]:
                    self.lost.add("frame(s) dropped: their timestamps leap far out of sequence",
                                  self._seconds(latest))
                else:
                    yield held
                    latest = held[1]
                held = None
            if latest is not None and pts - latest > leap:
                held = (frame, pts)
                continue
            yield frame, pts
            latest = pts if latest is None else max(latest, pts)
        if held is not None:
            yield held

    def _frame_pts(self, frame: av.VideoFrame) -> int:
        """The frame's pts, following the previous frame where it has none."""
        pts = self._scaled(frame.pts)
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_step
        return pts

    def _follows(self, pts: int) -> bool:
        """Take the frame at `pts` as the next one out; False (said) to drop one whose timestamp repeats or goes
        back."""
        if self._last_pts is not None and pts <= self._last_pts:
            self.lost.add("frame(s) dropped: their timestamps repeat or go back", self._seconds(pts))
            return False
        self._gaps.follow(self._last_pts, pts)
        self._last_pts = pts
        return True

    def _scaled(self, pts: int | None) -> int | None:
        """A pts of the stream in the time base frames are reported in."""
        return None if pts is None else round(pts * self._pts_scale)

    def _seconds(self, pts: int) -> float:
        return float(pts * self._time_base)

    def _decode(self, packet: av.Packet, index: int, tolerate: bool = False) -> list[av.VideoFrame]:
        try:
            frames = packet.decode()
            reason = "corrupt picture" if any(f.is_corrupt for f in frames) else None
        except av.FFmpegError as exc:
            frames, reason = [], ffmpeg_reason(exc)
        if reason is None:
            if packet.is_keyframe and self._orphans_from is not None and self._orphans_until is None:
                self._orphans_until = _decode_order(packet)
            return self._without_orphans(frames)
        if tolerate:
            return [f for f in frames if not f.is_corrupt]
        if not self.skip_errors:
            raise DecodeError(f"{self.path}: decode error at {self._place(index, packet.pts)} ({reason}); "
                              "use --skip-errors to drop broken frames")
        self._skip("undecodable frame(s) skipped", packet.pts)
        if packet.is_keyframe and (self._orphans_from is None or self._orphans_until is not None):
            self._orphans_from, self._orphans_until = _decode_order(packet), None
        return self._without_orphans([f for f in frames if not f.is_corrupt])

    def _without_orphans(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        """Drop the frames decoded after a lost keyframe and before the next one that decodes: decoders conceal
        the missing reference (a grey or stale picture) without an error, and upscaling that is not what
        --skip-errors is for."""
        kept = []
        for frame in frames:
            if self._is_orphan(frame):
                self._skip("frame(s) skipped: the keyframe they depend on does not decode", frame.pts)
            else:
                kept.append(frame)
        return kept

    def _is_orphan(self, frame: av.VideoFrame) -> bool:
        start, end = self._orphans_from, self._orphans_until
        if start is None:
            return False
        order = _decode_order(frame)
        if order is None:  # nothing to order by: an intra frame ends the span
            if frame.key_frame or frame.pict_type == PictureType.I:
                self._orphans_from = None
            return self._orphans_from is not None
        if end is not None and order >= end:
            self._orphans_from = None
            return False
        return order >= start

    def _skip(self, reason: str, pts: int | None) -> None:
        at = self._scaled(pts) if pts is not None else (self._last_pts or 0) + self._frame_step
        if at in self._gaps.skipped:  # a frame whose packet failed can still come out of the decoder later
            return
        if self.pts_range is not None and self.pts_range.past_end(at):  # the next chunk's loss, counted there
            return
        self.lost.add(reason, self._seconds(at))
        self._gaps.skipped.add(at)
        if self._first_pts is None:  # a loss before any keyframe: the first frames are missing from here
            self._first_pts = at


def _decode_order(item: av.Packet | av.VideoFrame) -> int | None:
    return item.dts if item.dts is not None else item.pts


# A stream that jumps this many frame steps or more has lost frames (VFR streams step by up to 1.5 frames).
_GAP_FRAMES = 2


class _Gaps:
    """Frames missing between the frames out, or before the first, judged at the end against the stream's
    typical frame duration: the median pts step seen, as a container's nominal rate can be far off (an AVI
    muxed with B-frames had FFmpeg guess 240 fps for 24)."""

    def __init__(self, nominal_step: int) -> None:
        self.nominal_step = nominal_step
        self.steps: Counter[int] = Counter()
        self.smallest: int | None = None
        self.jumps: list[tuple[int, int]] = []  # (pts before, pts after) of steps long enough to be gaps
        self.first: int | None = None  # the first frame out
        self.skipped: set[int] = set()  # pts of frames skipped as undecodable: a gap they explain is reported once

    def follow(self, previous: int | None, pts: int) -> None:
        if previous is None:
            self.first = pts
            return
        step = pts - previous
        self.steps[step] += 1
        self.smallest = step if self.smallest is None else min(self.smallest, step)
        # a superset of the gaps: the median step is at least the smallest (once a few steps are known)
        if self.steps.total() <= 8 or step > (_GAP_FRAMES + 0.5) * self.smallest:
            self.jumps.append((previous, pts))

    def typical_step(self) -> int:
        if not self.steps:
            return self.nominal_step
        half, seen = self.steps.total() / 2, 0
        for step in sorted(self.steps):
            seen += self.steps[step]
            if seen >= half:
                return step
        raise AssertionError("unreachable")

    def report(self, lost: LostFrames, expected_first: int | None, seconds: Callable[[int], float]) -> None:
        step = self.typical_step()
        if expected_first is not None and self.first is not None:
            self._judge(lost, expected_first - step, self.first, step, seconds, "the video starts later")
        for before, after in self.jumps:
            self._judge(lost, before, after, step, seconds, "the output holds the frame before")

    def _judge(self, lost: LostFrames, before: int, after: int, step: int, seconds: Callable[[int], float],
               held: str) -> None:
        frames = round((after - before) / step) - 1
        missing = frames - sum(before < skipped < after for skipped in self.skipped)
        if frames >= _GAP_FRAMES and missing > 0:
            lost.add(f"frame(s) missing: the file may be damaged there ({held})", seconds(before + step),
                     seconds(after - step), missing)


# Decoders whose "explode" mode refuses valid files: FFmpeg's TIFF decoder fails on any tag it does not
# know, including the ResolutionUnit tag that FFmpeg's own TIFF encoder writes.
_NO_EXPLODE = {"tiff"}


def _error_detection(codec: str, strict: bool) -> str:
    return "crccheck+bitstream+buffer" + ("+explode" if strict and codec not in _NO_EXPLODE else "")


def _open_with_hwdec(path: Path, device_type: str) -> av.container.InputContainer:
    """Open for hardware decoding (e.g. NVDEC with "cuda"); frames are downloaded to system memory.

    When the device cannot be opened the file is decoded in software, with a notice: the output is the same.
    """
    open_container(path).close()  # a bad input is reported as such, not as a device problem
    try:
        return av.open(str(path), hwaccel=HWAccel(device_type=device_type, allow_software_fallback=True))
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.warning("hardware decoding (%s) unavailable (%s); decoding in software", device_type, exc)
        return open_container(path)
