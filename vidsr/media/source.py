"""Source stage: demux and decode on its own thread.

Video frames keep their pts and time base (or get best-effort ones where the container's cannot be trusted:
`vidsr.media.stamps`); packets of the other streams are handed on untouched so the sink can remux them.
Decode errors stop the job with the frame index, or are skipped with `skip_errors`. Frames whose timestamps
repeat are dropped (no muxer takes them). Every frame the output lacks is reported with its count and times:
undecodable, dropped, promised by a packet that decoded to nothing, or listed in the container's index but
never read; a valid file reports nothing.
"""

from __future__ import annotations

import bisect
import io
import itertools
import logging
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
from vidsr.media.stamps import UNTRUSTED_PTS, FrameClock

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
    NUT may have changed: pts are given (and `pts_range` read) in `time_base`, the input's. `ordered` stamps
    frames by order (None: where the container's pts cannot be trusted; a chunk's NUT must be told its
    input's). `assume_fps` numbers the frames 0, 1, 2, ... in a time base of 1 / that rate, whatever their
    timestamps (FFmpeg's input -r).
    """

    def __init__(self, path: str | Path, skip_errors: bool = False, hwdec: str | None = None,
                 pts_range: PtsRange | None = None, data: bytes | None = None,
                 time_base: Fraction | None = None, ordered: bool | None = None,
                 assume_fps: Fraction | None = None) -> None:
        self.path = Path(path)
        self.skip_errors = skip_errors
        self.pts_range = pts_range
        self.container, self.video = self._open(hwdec, data, strict=True)
        self.lost = LostFrames()
        self._from_file = data is None
        self._time_base = Fraction(self.video.time_base or Fraction(1, 1000))
        self._pts_scale = self._time_base / time_base if time_base is not None else Fraction(1)
        self._time_base = time_base or self._time_base
        # Frames with no stamp to take follow the previous one at the stream's frame rate.
        rate = self.video.guessed_rate or self.video.average_rate or 25
        step = max(1, round(1 / (Fraction(rate) * self._time_base)))
        if assume_fps is not None:
            self._time_base, step = 1 / assume_fps, 1
        if ordered is None:
            ordered = self.container.format.name in UNTRUSTED_PTS
        self._clock = FrameClock(ordered, step, counted=assume_fps is not None)
        self._last_pts: int | None = None
        # Packets owe frames from the first keyframe on (the frames before a stream's first keyframe, as in a
        # capture cut mid-GOP, never decode and are not a loss), or from the first one that does not decode.
        self._owing = False
        self._seen: set[int] = set()  # the raw pts and dts of the video packets demuxed
        self._read: list[int] = []  # the raw stamps of the video packets demuxed
        self._last_stamp: int | None = None  # of the last video packet that had one
        self._passthrough: set[int] = set()
        self._end_of_last: int | None = None  # the byte after the last packet demuxed
        self._resume_pending = False  # the demuxer skipped bytes since the last video packet
        self._resumed_at: list[int] = []  # the raw stamps of the video packets after a skip
        self._read_all = False  # the demuxer reached the end of the file
        self._interlaced = False
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
        self._passthrough = {s.index for s in self.container.streams if s.index in passthrough}
        # Matroska's demuxer skips damaged data without a word: every packet's bytes are watched for that.
        watch = self._from_file and self.container.format.name.startswith("matroska")
        streams = list(self.container.streams) if watch else \
            [self.video] + [s for s in self.container.streams if s.index in self._passthrough]
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
        self._report_owed()
        # A chunk's losses are the job's to report, once, with the other chunks'; a chunk may hold no frame
        # (every one lost, or none in its range where damage shuffled the timestamps): the job judges the sum.
        if index == 0 and self.pts_range is None:
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
        """Decoded video frames with their stamps (those in `pts_range` only), passing other packets on."""
        span = self.pts_range
        for frame, pts in self._in_sequence(self._stamped(self._decoded(streams, on_packet))):
            if span is not None and span.past_end(pts):
                return  # frames come out in presentation order: the rest are later still (the next chunk's)
            if span is not None and span.before_start(pts):
                continue  # the previous chunk's, decoded as references: its losses are counted there
            if self._follows(pts):
                yield frame, pts

    def _decoded(self, streams: list[av.stream.Stream],
                 on_packet: Callable[[av.Packet], None]) -> Iterator[tuple[av.VideoFrame, str | None]]:
        """Every video frame the decoder gives, from the range's seek point on, with the reason it is lost
        (None for a frame to keep)."""
        span = self.pts_range
        if span is not None and span.seek is not None:
            self.container.seek(span.seek, stream=self.video)
        decoded = 0
        for packet in self.container.demux(streams):
            self._watch_bytes(packet)
            if packet.stream.index != self.video.index:
                if packet.size and packet.stream.index in self._passthrough:
                    on_packet(packet)
                continue
            self._seen.update(t for t in (packet.pts, packet.dts) if t is not None)
            raw = packet.pts if packet.pts is not None else packet.dts
            if raw is not None and packet.size:
                self._read.append(raw)
                if self._resume_pending:
                    self._resumed_at.append(raw)
                    self._resume_pending = False
            stamp = self._scaled(raw)
            if stamp is not None:
                self._last_stamp = stamp
            if packet.size and not packet.is_discard:
                self._owing = self._owing or packet.is_keyframe
                if self._owing:
                    self._clock.owe(stamp)
            # Frames before the range only give the range's frames their references: damage there is dropped.
            tolerate = span is not None and span.before_start(stamp)
            for frame, reason in self._decode(packet, stamp, decoded, tolerate):
                decoded += 1
                yield frame, reason
        self._read_all = True

    def _stamped(self, frames: Iterator[tuple[av.VideoFrame, str | None]]) -> Iterator[tuple[av.VideoFrame, int]]:
        """The frames to keep, each with its stamp (`FrameClock`); those lost are reported at theirs."""
        for frame, reason in frames:
            self._interlaced = self._interlaced or bool(frame.interlaced_frame)
            stamp = self._clock.take(self._scaled(frame.pts))
            if stamp is None:  # its packet's loss was reported
                continue
            if reason is not None:
                self._lose(reason, stamp)
            else:
                yield frame, stamp

    def _in_sequence(self, frames: Iterator[tuple[av.VideoFrame, int]]) -> Iterator[tuple[av.VideoFrame, int]]:
        """The frames less those whose timestamp leaps far ahead of the frames on both sides (damaged: a
        fragment's timestamps in a damaged MP4, say). Taken, such a frame made every later frame go back, and
        the gap broke the output. A leap of over a second (and ten frames) is held back until the next frame
        shows whether the stream goes on from there (a real gap) or from before it."""
        leap = max(round(1 / self._time_base), 10 * self._clock.step)
        latest: int | None = None  # the latest pts passed on
        held: tuple[av.VideoFrame, int] | None = None
        for frame, pts in frames:
            if held is not None and latest is not None:
                if pts <= latest:  # back even from before the leap: dropped as such, the leap still undecided
                    yield frame, pts
                    continue
                if pts < held[1]:
                    self._lose("frame(s) dropped: their timestamps leap far out of sequence", held[1],
                               at=latest)
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

    def _follows(self, pts: int) -> bool:
        """Take the frame at `pts` as the next one out; False (said) to drop one whose timestamp repeats or goes
        back."""
        if self._last_pts is not None and pts <= self._last_pts:
            self._lose(f"frame(s) dropped: their timestamps repeat or go back ({ASSUME_FPS_HINT})", pts)
            return False
        self._last_pts = pts
        return True

    def _scaled(self, pts: int | None) -> int | None:
        """A pts of the stream in the time base frames are reported in."""
        return None if pts is None else round(pts * self._pts_scale)

    def _seconds(self, pts: int) -> float:
        return float(pts * self._time_base)

    def _lose(self, reason: str, stamp: int, at: int | None = None, count: int = 1) -> None:
        """Report `count` frame(s) lost at `stamp` (said at `at`, if given), unless another range holds them."""
        span = self.pts_range
        if span is not None and (span.before_start(stamp) or span.past_end(stamp)):
            return
        self.lost.add(reason, self._seconds(stamp if at is None else at), count=count)

    def _decode(self, packet: av.Packet, stamp: int | None, index: int,
                tolerate: bool = False) -> list[tuple[av.VideoFrame, str | None]]:
        """The packet's frames, each with the reason it is lost (None: kept); a packet that fails stops the
        job, or is reported lost (`skip_errors`)."""
        try:
            frames = packet.decode()
            reason = "corrupt picture" if any(f.is_corrupt for f in frames) else None
        except av.FFmpegError as exc:
            frames, reason = [], ffmpeg_reason(exc)
        if reason is None:
            if packet.is_keyframe and self._orphans_from is not None and self._orphans_until is None:
                self._orphans_until = _decode_order(packet)
            return self._with_orphans(frames)
        if not tolerate and not self.skip_errors:
            raise DecodeError(f"{self.path}: decode error at {self._place(index, packet.pts)} ({reason}); "
                              "use --skip-errors to drop broken frames")
        if packet.size and not packet.is_discard:
            if not self._owing:  # a loss before any keyframe: the frames are owed from here
                self._owing = True
                self._clock.owe(stamp)
            self._clock.settle(stamp)
            if not tolerate:
                self._lose(_UNDECODABLE, stamp if stamp is not None else self._after_last_stamp())
        if tolerate:
            return [(f, None) for f in frames if not f.is_corrupt]
        if packet.is_keyframe and (self._orphans_from is None or self._orphans_until is not None):
            self._orphans_from, self._orphans_until = _decode_order(packet), None
        return [(f, _UNDECODABLE if f.is_corrupt else why) for f, why in self._with_orphans(frames)]

    def _after_last_stamp(self) -> int:
        """Where a packet without a timestamp is, for reports: a frame after the last packet that had one."""
        if self._last_stamp is None:
            return self._clock.next_stamp()
        return self._last_stamp + self._clock.step

    def _with_orphans(self, frames: list[av.VideoFrame]) -> list[tuple[av.VideoFrame, str | None]]:
        """The frames, those decoded after a lost keyframe and before the next one that decodes marked lost:
        decoders conceal the missing reference (a grey or stale picture) without an error, and upscaling that
        is not what --skip-errors is for."""
        return [(frame, _ORPHANED if self._is_orphan(frame) else None) for frame in frames]

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

    def _report_owed(self) -> None:
        """Report the frames still owed: promised by a packet, given by no decoder (their stamps), and listed
        in the container's index but never read. A field-coded stream (two packets a frame) owes nothing
        unless it was found damaged."""
        span = self.pts_range

        def in_range(stamp: int) -> bool:
            return span is None or not (span.before_start(stamp) or span.past_end(stamp))

        stamps, unstamped = self._clock.owed(in_range)
        if self._interlaced and not self.lost.spans:
            stamps, unstamped = [], 0
        for stamp in stamps:
            self._lose(_NO_PICTURE, stamp)
        if unstamped:
            self._lose(_NO_PICTURE, self._clock.next_stamp(), count=unstamped)
        self._report_skipped(in_range)

    def _watch_bytes(self, packet: av.Packet) -> None:
        """Note where the demuxer went on after skipping bytes that no packet holds (a damaged Matroska
        cluster; a block's header is a few bytes, a cluster's some tens)."""
        if packet.pos is None or packet.pos < 0 or not packet.size:
            return
        if self._end_of_last is not None and packet.pos - self._end_of_last > _SKIPPED_BYTES:
            self._resume_pending = True
        self._end_of_last = packet.pos + packet.size

    def _report_skipped(self, in_range: Callable[[int], bool]) -> None:
        """Report the stretches the demuxer skipped: where the file's index lists frames it never gave (every
        frame in MP4 and AVI, keyframes in Matroska), or where it went on past unread bytes. Their frames are
        counted by the index, and from the frame rate across the stretch (at least one, at most what fits)."""
        read = sorted(set(self._read))
        if self._clock.counted or not read:
            return
        stretches: dict[int | None, list[int]] = {at: [] for at in self._resumed_at}
        span = self.pts_range
        if span is not None and span.start is not None and self._from_file and read[0] > span.start:
            stretches.setdefault(read[0], []).append(span.start)  # the range's first keyframe was not read
        for entry in self._unread_index_entries():
            i = bisect.bisect_right(read, entry)
            stretches.setdefault(read[i] if i < len(read) else None, []).append(entry)
        step = _typical_step(read)
        for after, listed in stretches.items():
            i = bisect.bisect_left(read, after) if after is not None else len(read)
            lo = read[i - 1] + step if i > 0 else min(listed, default=None)
            hi = after - step if after is not None else max(listed, default=None)
            if lo is None or hi is None:
                continue
            count = max(len(listed), round((hi - lo) / step) + 1)
            first, last = self._scaled(lo), self._scaled(max(lo, hi))
            if count > 0 and first is not None and last is not None and in_range(first):
                self.lost.add(_UNREAD, self._seconds(first), self._seconds(last), count)

    def _unread_index_entries(self) -> list[int]:
        """The raw stamps of the index's entries, up to where the demuxer got, that it never gave."""
        if not self._from_file:  # a chunk's NUT indexes only what it holds
            return []
        limit = None if self._read_all else max(self._seen)
        return [entry.timestamp for entry in self.video.index_entries
                if not entry.is_discard and entry.size and entry.timestamp not in self._seen
                and (limit is None or entry.timestamp <= limit)]


def _typical_step(stamps: list[int]) -> int:
    """The median step between the sorted stamps: the frame duration of most frames."""
    steps = sorted(b - a for a, b in itertools.pairwise(stamps))
    return max(1, steps[len(steps) // 2]) if steps else 1


_SKIPPED_BYTES = 4096
ASSUME_FPS_HINT = "--assume-fps RATE stamps frames in order"
_UNDECODABLE = "undecodable frame(s) skipped"
_ORPHANED = "frame(s) skipped: the keyframe they depend on does not decode"
_NO_PICTURE = "frame(s) missing: their packets decode to no picture (damaged there)"
_UNREAD = "frame(s) missing: the demuxer skipped damaged data there, or the file is cut short"


def _decode_order(item: av.Packet | av.VideoFrame) -> int | None:
    return item.dts if item.dts is not None else item.pts


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
